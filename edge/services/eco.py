"""Eco schedule on the live machine: once a minute `edge.core.eco.decide` picks the mode from the
local hour, the time since the door last moved and the trusted cabinet reading; a change is written
to the controller (setpoint through `TemperatureService.set_setpoint`, journaled; the `fan_eco`
coil when the map has it) and to the I/O module's cabinet light. A door opening wakes the machine
at once. Start counts as door activity, so a restarted machine does not go to eco by day at once.
Writes that fail are retried on the next minute; the temperature service keeps the controller on
the last setpoint written either way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from typing import Any

import structlog

from drivers.errors import DeviceError
from drivers.modbus import ModbusDevice
from edge.clock import SystemClock
from edge.config import TemperatureConfig
from edge.core import eco
from edge.services.temperature import TemperatureService

log = structlog.get_logger(__name__)
DECIDE_EVERY_S = 60.0


def eco_config(t: TemperatureConfig) -> eco.EcoConfig:
    return eco.EcoConfig(
        normal_setpoint_c=t.setpoint_c,
        setback_c=t.eco_setback_c,
        limit_c=t.food_safety_limit_c,
        hysteresis_c=t.controller_band_c,
        margin_c=t.eco_margin_c,
        night_start_h=t.eco_night_start_h,
        night_end_h=t.eco_night_end_h,
        idle_after_s=t.eco_idle_after_s,
        wake_s=t.eco_wake_s,
    )


class EcoService:
    """Applies the eco schedule to one fridge. Run `run()` supervised ('eco')."""

    def __init__(
        self,
        temperature: TemperatureService,
        config: eco.EcoConfig,
        *,
        io: ModbusDevice | None = None,
        door: Any = None,
        clock: SystemClock | None = None,
        tz: str = "UTC",
    ) -> None:
        self.temperature, self.config, self.io = temperature, config, io
        self.clock = clock or SystemClock()
        self.tz = zoneinfo.ZoneInfo(tz)
        self.mode: eco.Mode | None = None
        self.last_door = self.clock.monotonic()
        self._last_decide: float | None = None
        self._wake = asyncio.Event()
        self.counters = {"switches": 0, "write_failures": 0}
        temperature.device.subscribe(self._on_poll)
        if door is not None:
            door.on_opened(self._on_door)
            door.on_closed(self._on_door)

    def _on_door(self, _: Any) -> None:
        self.last_door = self.clock.monotonic()
        self._last_decide = None  # decide at the next poll, not in up to a minute
        self._wake.set()

    def _on_poll(self, _: ModbusDevice) -> None:
        now = self.clock.monotonic()
        if self._last_decide is None or now - self._last_decide >= DECIDE_EVERY_S:
            self._last_decide = now
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.step()

    async def step(self) -> eco.Mode:
        """Decide now and write what changed."""
        local = dt.datetime.fromtimestamp(self.clock.wall(), self.tz)
        cabinet = self.temperature.status()["cabinet_c"] if self.temperature.device.online else None
        mode = eco.decide(
            self.config, local.hour + local.minute / 60, self.clock.monotonic() - self.last_door, cabinet
        )
        if self.mode is None or (mode.eco, mode.setpoint_c, mode.lights_on) != (
            self.mode.eco,
            self.mode.setpoint_c,
            self.mode.lights_on,
        ):
            try:
                await self._apply(mode)
            except (DeviceError, TimeoutError, ValueError) as exc:
                self.counters["write_failures"] += 1
                log.warning("eco_write_failed", error=str(exc))
                return mode
            log.info(
                "eco_mode",
                eco=mode.eco,
                reason=mode.reason,
                setpoint_c=mode.setpoint_c,
                lights=mode.lights_on,
            )
            self.counters["switches"] += 1
            self.mode = mode
        return mode

    async def _apply(self, mode: eco.Mode) -> None:
        if abs(self.temperature.setpoint - mode.setpoint_c) >= 0.05:
            await self.temperature.set_setpoint(mode.setpoint_c, actor="eco")
        device = self.temperature.device
        if "fan_eco" in device.regmap.points:
            async with asyncio.timeout(5.0):
                await device.write("fan_eco", mode.fan_eco)
        if self.io is not None and "light" in self.io.regmap.points:
            async with asyncio.timeout(5.0):
                await self.io.write("light", mode.lights_on)

    def status(self) -> dict[str, Any]:
        m = self.mode
        return {"eco": bool(m and m.eco), "reason": m.reason if m else "", "counters": dict(self.counters)}

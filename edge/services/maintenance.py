"""Predictive maintenance on the live machine: the compressor's run-length trend from the fridge
controller's polls (`edge.core.maintenance.CoolingWatch`) raises a "service soon" alarm before a
refrigerant leak or a dirty condenser lets the cabinet warm; `SlotTrends` does the same for each
spiral from the board's motor run time per vend. Runs touched by a defrost or an open
door are not judged. The learnt baseline lives in memory: after a restart it is learnt again
(`learn_s`, a day by default) — no alarm can come from a half-learnt baseline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from drivers.modbus import ModbusDevice
from drivers.vend_board import VendOutcome, VendResult
from edge.clock import SystemClock
from edge.core.maintenance import CoolingConfig, CoolingWatch, SlotConfig, SlotWatch
from edge.ledger.db import LedgerDB
from edge.services.temperature import apply_alarm_effects

log = structlog.get_logger(__name__)


class MaintenanceService:
    """Feeds one fridge controller's compressor state to a CoolingWatch. Run `run()` supervised."""

    def __init__(
        self,
        db: LedgerDB,
        device: ModbusDevice,
        *,
        door: Any = None,
        clock: SystemClock | None = None,
        config: CoolingConfig | None = None,
        name: str = "fridge",
    ) -> None:
        self.db, self.device, self.door = db, device, door
        self.clock = clock or SystemClock()
        self.watch = CoolingWatch(name, config or CoolingConfig())
        self._queue: asyncio.Queue[tuple[float, bool, bool, bool]] = asyncio.Queue(maxsize=10_000)
        device.subscribe(self._on_poll)

    def _on_poll(self, dev: ModbusDevice) -> None:
        v = dev.values
        if not dev.online or "compressor_on" not in v:
            return
        door_open = self.door is not None and self.door.closed is False
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(
            (self.clock.monotonic(), bool(v["compressor_on"]), bool(v.get("defrost_active")), door_open)
        )

    async def run(self) -> None:
        while True:
            await self._process(*await self._queue.get())

    async def drain(self) -> None:
        while not self._queue.empty():
            await self._process(*self._queue.get_nowait())

    async def _process(self, t: float, on: bool, defrost: bool, door_open: bool) -> None:
        effects = self.watch.observe(t, on, defrost=defrost, door_open=door_open)
        if effects:
            async with self.db.tx() as tx:
                await apply_alarm_effects(tx, effects)

    async def serviced(self, actor: str) -> None:
        """A technician repaired the cooling: clear the alarm, learn the baseline again."""
        effects = self.watch.serviced()
        async with self.db.tx() as tx:
            await apply_alarm_effects(tx, effects)
            await tx.event("cooling_serviced", {"actor": actor, "device": self.watch.name})

    def status(self) -> dict[str, Any]:
        return {
            "service_soon": self.watch.active,
            "ratio": self.watch.ratio("normal"),
            "duty": None if self.watch.duty is None else round(self.watch.duty, 3),
        }


class SlotTrends:
    """Per-slot motor run-time trends from every vend (`VendService.result_listeners`): a spiral that
    starts to bind raises "service soon" before it jams. Baselines are in memory (relearnt after a
    restart from the next `SlotConfig.baseline_n` vends). Run `run()` supervised."""

    def __init__(self, db: LedgerDB, config: SlotConfig | None = None) -> None:
        self.db = db
        self.config = config or SlotConfig()
        self.watches: dict[str, SlotWatch] = {}
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue(maxsize=10_000)

    def on_vend(self, slot_id: str, result: VendResult) -> None:
        """Listener: only successful vends say how freely the spiral turns (a jam stops it half-way)."""
        if result.outcome is VendOutcome.OK and result.motor_ms > 0 and not self._queue.full():
            self._queue.put_nowait((slot_id, result.motor_ms))

    async def run(self) -> None:
        while True:
            await self._process(*await self._queue.get())

    async def drain(self) -> None:
        while not self._queue.empty():
            await self._process(*self._queue.get_nowait())

    async def _process(self, slot_id: str, motor_ms: int) -> None:
        watch = self.watches.setdefault(slot_id, SlotWatch(slot_id, self.config))
        effects = watch.observe(motor_ms)
        if effects:
            async with self.db.tx() as tx:
                await apply_alarm_effects(tx, effects)

    async def serviced(self, slot_id: str, actor: str) -> None:
        """A technician serviced the spiral: clear its alarm, learn its baseline again."""
        watch = self.watches.get(slot_id)
        effects = watch.serviced() if watch is not None else []
        async with self.db.tx() as tx:
            await apply_alarm_effects(tx, effects)
            await tx.event("spiral_serviced", {"slot_id": slot_id, "actor": actor})

"""Scenario `fridge-day`: a simulated 24 h of a chilled vending machine in well under a minute.

The simulated Modbus plant (fridge controller, weight shelves, door I/O) serves RTU on a pty in this
process; the daemon (a subprocess) runs on its `[simulation]` clock with the same origin and speed
as the plant's clock, so alarm delays and the food-safety allowance are measured in simulated time
on both sides. Script: door openings (one left open too long), a compressor failure for an hour and
its recovery, sales of perishable and non-perishable goods through the kiosk API (the food-safety
guard refuses perishables), a weight-shelf module going silent, and a technician clearing the
lockout through the API.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

from hw_sim.demo.fridge_summary import summary
from hw_sim.modbus import SimModbusPlant
from hw_sim.rigs.api import SaleRefused
from hw_sim.rigs.config import plant_config, simulation_config
from hw_sim.rigs.machine import ProcessRig, start_machine
from hw_sim.world import FridgeWorld, load_demo_planogram

START_WALL = 1_800_000_000.0  # 2027-01-15 08:00 UTC: any fixed origin keeps runs comparable
HOUR = 3600.0


@dataclass
class FridgeDay:
    """The plant simulator and the machine, on one simulated clock, and what the script saw."""

    plant: SimModbusPlant
    rig: ProcessRig
    tally: dict[str, Any] = field(default_factory=lambda: {
        "sales": [], "door_visits": 0, "during_lockout": {}, "after_clear": {}, "after_silence": {},
        "cleared": False, "locked_after_failure": False})

    def now(self) -> float:
        return float(self.plant.clock.now())

    async def until(self, sim_t: float, *, step_s: float = 0.003) -> None:
        """Let real time pass until the simulated clock reaches `sim_t` seconds."""
        while self.now() < sim_t:
            await asyncio.sleep(min(step_s, max(0.0, (sim_t - self.now()) / self.plant.clock.speed)))

    async def sell(self, slot: str) -> str:
        """One customer buys from `slot` at the kiosk; "sold" or the refusal reason."""
        try:
            order = await self.rig.kiosk.sell(slot, f"card:fridge-{len(self.tally['sales'])}")
            result = "sold" if order["status"] == "completed" else str(order["status"])
        except SaleRefused as exc:
            result = exc.error
        self.tally["sales"].append((round(self.now() / HOUR, 2), slot, result))
        return result

    async def door_visit(self, open_s: float) -> bool:
        """A technician unlocks (API), opens for `open_s` simulated seconds, closes."""
        await self.rig.tech.action("unlock", ms=int((open_s + 60) * 1000))  # open within a minute
        if not self.plant.open_door():
            return False
        await self.until(self.now() + open_s)
        self.plant.close_door()
        return True


async def fridge_day(state_dir: str, seed: int = 1, *, speed: float = 2000.0) -> dict[str, Any]:
    """Run the simulated day; returns the summary (`ok` is True when everything is consistent)."""
    root = pathlib.Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    origin = time.time()  # the plant's clock and the daemon's [simulation] clock both count from here
    plant = SimModbusPlant(FridgeWorld(load_demo_planogram()), speed=speed, seed=seed, wire_timing=False,
                           clock_origin_unix=origin)
    try:
        link = await plant.serve_rtu(str(root / "ttyMODBUS"))
    except BaseException:
        await plant.close()
        raise
    extra = plant_config(link, poll_s=0.02) + simulation_config(speed, origin, START_WALL)
    rig = await start_machine(root, speed=speed, seed=seed, extra=extra, fill="all", closers=[plant.close])
    day = FridgeDay(plant, rig)
    try:
        started, t0 = time.monotonic(), day.now()
        await _script(day, t0)
        return await summary(day, t0, time.monotonic() - started)
    finally:
        await rig.stop()  # the daemon stops first (door locked), then the simulators


async def _script(day: FridgeDay, t0: float) -> None:
    tally, api = day.tally, day.rig.tech

    async def at(hours: float) -> None:
        await day.until(t0 + hours * HOUR)

    await at(0.5)
    for slot in ("D3", "A1"):
        await day.sell(slot)
    for h in (1, 3, 5, 7, 9):
        await at(h)
        tally["door_visits"] += await day.door_visit(150)
    await at(10)
    tally["door_visits"] += await day.door_visit(480)  # left open: door-open-too-long alarm
    await at(12)
    day.plant.fail_compressor(True)
    await at(13)
    day.plant.fail_compressor(False)
    tally["locked_after_failure"] = bool((await api.get("/api/v1/temperature"))["food_safety_locked"])
    for slot in ("D3", "E1", "A1", "B3"):  # perishable, perishable, drink, chocolate
        tally["during_lockout"][slot] = await day.sell(slot)
    await at(15)
    tally["cleared"] = await api.action("clear-lockout") == "cleared"
    tally["after_clear"]["D3"] = await day.sell("D3")
    await at(18)
    day.plant.silence(2, seconds=0.5 * HOUR / day.plant.clock.speed)  # weight shelves silent ~30 min
    await at(19)
    tally["after_silence"]["D4"] = await day.sell("D4")
    await at(24)

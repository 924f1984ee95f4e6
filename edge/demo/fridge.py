"""Scenario `fridge-day`: a simulated 24 h of a chilled vending machine in well under a minute.

The simulated Modbus plant (fridge controller, weight shelves, door I/O) serves RTU on a pty; the
daemon's services run on a clock that follows the simulator's clock, so alarm delays and the
food-safety allowance are measured in simulated time. Script: door openings (one left open too
long), a compressor failure for an hour and its recovery, sales of perishable and non-perishable
goods through the real VendService (with the food-safety guard), a weight-shelf module going silent,
and a technician clearing the lockout.
"""

from __future__ import annotations

import asyncio
import pathlib
from dataclasses import dataclass, field
from typing import Any

from edge.clock import ManualClock
from edge.config import load_config
from edge.core.errors import SaleRefused
from edge.daemon import Daemon
from edge.demo.setup import write_config
from edge.ledger import repo
from edge.services.plant import Plant
from hw_sim.modbus import SimModbusPlant
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram

START_WALL = 1_800_000_000.0  # 2027-01-15 08:00 UTC: any fixed origin keeps runs comparable
HOUR = 3600.0


class PlantClock(ManualClock):
    """A ManualClock that also follows the simulator's clock (speed x real time)."""

    def __init__(self, sim_clock: Any, start: float = START_WALL) -> None:
        super().__init__(start)
        self._sim = sim_clock

    def wall(self) -> float:
        return self._wall + float(self._sim.now())

    def monotonic(self) -> float:
        return self._mono + float(self._sim.now())


def plant_config(link: str, *, poll_s: float, restock_grace_s: float = 3600, extra: str = "") -> str:
    """Config sections for the Modbus bus, the I/O-module door and demo temperature limits."""
    dev = f'poll_interval_s = {poll_s}\noffline_after = 3'
    return f"""
[door]
source = "io_module"
unlock_ms = 8000
open_too_long_s = 300

[temperature]
setpoint_c = 4.0
high_alarm_c = 6.0
high_alarm_delay_s = 600
low_alarm_c = -1.0
hysteresis_c = 1.0
food_safety_limit_c = 5.0
food_safety_max_s = 1800
restock_grace_s = {restock_grace_s}

[modbus.bus0]
serial_port = "{link}"
timeout_s = 0.05
retries = 0
gap_ms = 0

[modbus.bus0.devices.fridge]
unit_id = 1
map = "fridge_controller"
role = "fridge"
{dev}

[modbus.bus0.devices.shelves]
unit_id = 2
map = "weight_shelf"
role = "weight_shelves"
{dev}

[modbus.bus0.devices.io]
unit_id = 3
map = "io_module"
role = "io"
{dev}
{extra}
"""


@dataclass
class FridgeRig:
    """Simulators + daemon + plant services, all on one simulated clock."""

    sim: SimModbusPlant
    board_sim: SimVendBoard
    daemon: Daemon
    plant: Plant
    clock: PlantClock
    world: FridgeWorld
    root: pathlib.Path
    notes: dict[str, Any] = field(default_factory=dict)

    def sim_now(self) -> float:
        return float(self.sim.clock.now())

    async def until(self, sim_t: float, *, step_s: float = 0.003) -> None:
        """Let real time pass until the simulator's clock reaches `sim_t` seconds."""
        while self.sim_now() < sim_t:
            await asyncio.sleep(step_s)

    async def stop(self) -> None:
        await self.daemon.stop()  # stops the plant too (door locked first)
        await self.board_sim.stop()
        await self.sim.close()


async def start_fridge_rig(state_dir: str, *, speed: float = 2000.0, seed: int = 1, poll_s: float = 0.03,
                           wire_timing: bool = False, fill: bool = True,
                           restock_grace_s: float = 3600) -> FridgeRig:
    """Start the Modbus plant (RTU on a pty), the vend board (pty), the daemon and `start_plant`."""
    root = pathlib.Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    doc = load_demo_planogram()
    world = FridgeWorld(doc)
    sim = SimModbusPlant(world, speed=speed, seed=seed, wire_timing=wire_timing)
    link = await sim.serve_rtu(str(root / "ttyMODBUS"))
    spiral = {s["slot_id"]: s["capacity"] for s in doc["slots"] if s.get("shelf") is None}
    board_sim = SimVendBoard(dict(spiral), speed=speed, seed=seed)
    board_link = await board_sim.serve_pty(str(root / "ttyVEND"))
    clock = PlantClock(sim.clock)
    cfg = load_config(write_config(root, board_port=board_link, extra=plant_config(link, poll_s=poll_s,
                                                                           restock_grace_s=restock_grace_s)))
    daemon = Daemon(cfg, clock=clock, time_scale=speed)  # the daemon calls start_plant (door, guards)
    await daemon.start()
    plant = daemon.plant
    assert plant is not None and daemon.machine is not None
    machine = daemon.machine
    await daemon.board.wait_connected(5.0)  # type: ignore[union-attr]
    if fill:
        await machine.restock(None, None, actor="demo")
    return FridgeRig(sim, board_sim, daemon, plant, clock, world, root)


async def _sell(rig: FridgeRig, slot: str, tally: dict[str, Any]) -> str:
    """One customer buys from `slot`; returns "sold" or the refusal reason."""
    machine = rig.daemon.machine
    assert machine is not None
    try:
        order = await machine.sell(slot, payment_ref=f"card:fridge-{len(tally['sales'])}")
        result = "sold" if order["status"] == "completed" else order["status"]
    except SaleRefused as exc:
        result = exc.reason
    tally["sales"].append((round(rig.sim_now() / HOUR, 2), slot, result))
    return result


async def _door_visit(rig: FridgeRig, open_s: float) -> bool:
    """A technician/customer unlocks, opens for `open_s` simulated seconds, closes."""
    door = rig.plant.door
    assert door is not None
    await door.unlock(int((open_s + 60) * 1000), "demo_visit", actor="demo")
    if not rig.sim.open_door():
        return False
    await rig.until(rig.sim_now() + open_s)
    rig.sim.close_door()
    return True


async def _script(rig: FridgeRig, t0: float, tally: dict[str, Any]) -> None:
    temp = rig.plant.temperature
    assert temp is not None

    async def at(hours: float) -> None:
        await rig.until(t0 + hours * HOUR)

    await at(0.5)
    for slot in ("D3", "A1"):
        await _sell(rig, slot, tally)
    for h in (1, 3, 5, 7, 9):
        await at(h)
        tally["door_visits"] += await _door_visit(rig, 150)
    await at(10)
    tally["door_visits"] += await _door_visit(rig, 480)  # left open: door-open-too-long alarm
    await at(12)
    rig.sim.fail_compressor(True)
    await at(13)
    rig.sim.fail_compressor(False)
    tally["locked_after_failure"] = temp.safety.locked
    for slot in ("D3", "E1", "A1", "B3"):  # perishable, perishable, drink, chocolate
        tally["during_lockout"][slot] = await _sell(rig, slot, tally)
    await at(15)
    tally["cleared"] = await temp.clear_lockout("tech-anna")
    tally["after_clear"]["D3"] = await _sell(rig, "D3", tally)
    await at(18)
    rig.sim.silence(2, seconds=0.5 * HOUR / rig.sim.clock.speed)  # weight shelves silent ~30 min
    await at(19)
    tally["after_silence"]["D4"] = await _sell(rig, "D4", tally)
    await at(24)


async def _summary(rig: FridgeRig, t0: float, tally: dict[str, Any], real_s: float) -> dict[str, Any]:
    db = rig.daemon.db
    assert db is not None
    temp = rig.plant.temperature
    assert temp is not None

    async def count(sql: str, *args: Any) -> int:
        row = await db.fetchone(sql, args)
        return int(row[0]) if row else 0

    raised = await count("SELECT COUNT(*) FROM events WHERE kind='alarm_raised'")
    cleared = await count("SELECT COUNT(*) FROM events WHERE kind='alarm_cleared'")
    kinds = sorted({r["kind"] for r in await db.fetchall("SELECT DISTINCT kind FROM alarms")})
    active = [a["alarm_key"] for a in await repo.active_alarms(db)]
    lockouts = await count("SELECT COUNT(*) FROM lockouts WHERE kind='food_safety'")
    open_lockouts = await count("SELECT COUNT(*) FROM lockouts WHERE kind='food_safety' AND cleared_at IS NULL")
    unlock_journal = await count("SELECT COUNT(*) FROM events WHERE kind='door_unlock_requested'")
    minutes = await count("SELECT COUNT(DISTINCT minute) FROM telemetry_1min")
    refused = temp.counters["sales_refused_food_safety"]
    during = tally["during_lockout"]
    ok = (lockouts >= 1 and open_lockouts == 0 and tally["cleared"] and tally["locked_after_failure"]
          and during.get("D3") == during.get("E1") == "food_safety_lockout"
          and during.get("A1") == during.get("B3") == "sold" and tally["after_clear"].get("D3") == "sold"
          and tally["after_silence"].get("D4") == "sold" and refused == 2
          and not active and raised == cleared and {"temperature_high", "door_open_too_long",
                                                    "device_offline", "food_safety_lockout"} <= set(kinds)
          and (temp.max_cabinet_c or 0) > temp.limits.limit_c
          and unlock_journal == rig.plant.door.counters["unlocks"])  # type: ignore[union-attr]
    return {
        "scenario": "fridge-day", "ok": bool(ok), "sim_hours": round((rig.sim_now() - t0) / HOUR, 2),
        "real_s": round(real_s, 1), "alarms_raised": raised, "alarms_cleared": cleared, "alarm_kinds": kinds,
        "alarms_active_at_end": active, "food_safety_lockouts": lockouts,
        "max_cabinet_c": round(temp.max_cabinet_c or 0.0, 2), "sales_refused_food_safety": refused,
        "sales": len(tally["sales"]), "sales_during_lockout": during,
        "door_visits": tally["door_visits"], "door_openings_seen": rig.plant.door.counters["openings"],  # type: ignore[union-attr]
        "door_unlocks_journaled": unlock_journal, "telemetry_minutes": minutes,
        "compressor_duty_1h": temp.duty_cycle(), "defrosts": temp.defrost["count"],
        "modbus_polls": {k: d.counters["ok"] for k, d in rig.plant.devices.items()},
    }


async def fridge_day(state_dir: str, seed: int = 1, *, speed: float = 2000.0) -> dict[str, Any]:
    """Run the simulated day; returns the summary (`ok` is True when everything is consistent)."""
    loop = asyncio.get_running_loop()
    rig = await start_fridge_rig(state_dir, speed=speed, seed=seed, poll_s=0.02)
    tally: dict[str, Any] = {"sales": [], "door_visits": 0, "during_lockout": {}, "after_clear": {},
                             "after_silence": {}, "cleared": False, "locked_after_failure": False}
    try:
        started, t0 = loop.time(), rig.sim_now()
        await _script(rig, t0, tally)
        if rig.plant.temperature is not None:
            await rig.plant.temperature.drain()
        await asyncio.sleep(0.05)  # let the device watch and door tasks write what they saw
        return await _summary(rig, t0, tally, loop.time() - started)
    finally:
        await rig.stop()

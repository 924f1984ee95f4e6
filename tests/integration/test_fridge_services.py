"""Cold chain end to end: SimModbusPlant over RTU on a real pty, real SQLite, the real VendService.

Simulated time runs 2000x real time; the services' clock follows the simulator's clock, so alarm
delays and the food-safety allowance are checked in simulated seconds.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from edge.core.errors import SaleRefused
from edge.ledger import repo
from edge.services.temperature import TemperatureService
from tests.support.rigs.fridge import HOUR, FridgeRig, start_fridge_rig
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(40)
MIN = 60.0


def ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture
async def rig(tmp_path):
    r = await start_fridge_rig(str(tmp_path), speed=2000, poll_s=0.02, restock_grace_s=0)
    await wait_for(lambda: all(d.online for d in r.plant.devices.values()))
    yield r
    await r.stop()


async def sell(r: FridgeRig, slot: str) -> str:
    try:
        order = await r.daemon.machine.sell(slot, "card:test")
    except SaleRefused as exc:
        return exc.reason
    return order["status"]


async def alarm_events(r: FridgeRig, key: str) -> list[tuple[str, float]]:
    rows = await r.daemon.db.fetchall("SELECT kind, at, data FROM events WHERE kind IN "
                                      "('alarm_raised','alarm_cleared') ORDER BY event_id")
    return [(row["kind"], ts(row["at"])) for row in rows if json.loads(row["data"])["alarm_key"] == key]


async def test_cold_chain_regulation_door_alarm_lockout_and_clear(rig):
    temp = rig.plant.temperature
    cfg = rig.daemon.config.temperature
    t0 = rig.sim_now()
    await rig.until(t0 + HOUR)
    hour = temp.series(rig.clock.wall() - HOUR)
    # regulation: the thermostat cycles and holds the cabinet around the 4 °C setpoint
    assert {row[3] for row in hour} == {True, False}
    assert 2.0 < min(r[1] for r in hour) and max(r[1] for r in hour) < 5.6
    assert 0.05 < temp.duty_cycle() < 0.9

    # a door opening warms the cabinet
    await rig.plant.door.unlock(600_000, "test", actor="pytest")
    assert rig.sim.open_door()
    opened = rig.clock.wall()
    await rig.until(rig.sim_now() + 8 * MIN)
    rig.sim.close_door()
    await rig.until(rig.sim_now() + 2 * MIN)
    during = temp.series(opened)
    assert max(r[1] for r in during) > max(r[1] for r in hour) + 1.0

    # compressor fails for an hour: high alarm after its delay, lockout after 30 min above 5 °C
    await rig.until(rig.sim_now() + 30 * MIN)
    rig.sim.fail_compressor(True)
    await rig.until(rig.sim_now() + HOUR)
    rig.sim.fail_compressor(False)
    assert temp.safety.locked
    assert await sell(rig, "D3") == "food_safety_lockout"  # sandwich: perishable
    assert await sell(rig, "A1") == "completed"  # cola: not perishable
    lock = await rig.daemon.db.fetchone("SELECT * FROM lockouts WHERE kind='food_safety'")
    assert lock["cleared_at"] is None and json.loads(lock["data"])["above_s"] > cfg.food_safety_max_s

    # a restart reads the lockout back from the ledger
    again = TemperatureService(rig.daemon.db, temp.device, cfg, clock=rig.clock)
    await again.load()
    assert again.safety.locked

    await rig.until(rig.sim_now() + 45 * MIN)  # recovery: the cabinet is cold again, the lockout holds
    await temp.drain()
    series = temp.series(0)
    events = await alarm_events(rig, "temp_high:fridge")
    assert [k for k, _ in events][-2:] == ["alarm_raised", "alarm_cleared"]
    raised_at, cleared_at = events[-2][1], events[-1][1]
    # above the limit for the whole delay: the last sample at or below it came a full delay before the
    # alarm (judged on the samples themselves, not on how many polls a loaded machine managed)
    last_cold = max(r[0] for r in series if r[0] < raised_at and r[1] is not None and r[1] <= cfg.high_alarm_c)
    assert raised_at - last_cold >= cfg.high_alarm_delay_s
    held = [r[1] for r in series if last_cold < r[0] <= raised_at]
    assert len(held) >= 2 and min(held) > cfg.high_alarm_c
    before_clear = [r[1] for r in series if r[0] <= cleared_at][-1]
    assert before_clear <= cfg.high_alarm_c - cfg.hysteresis_c
    assert await sell(rig, "E1") == "food_safety_lockout"

    assert await temp.clear_lockout("tech-anna")
    assert await sell(rig, "D3") == "completed"
    lock = await rig.daemon.db.fetchone("SELECT * FROM lockouts WHERE kind='food_safety'")
    assert lock["cleared_by"] == "tech-anna" and lock["cleared_at"]
    active = {a["alarm_key"] for a in await repo.active_alarms(rig.daemon.db)}
    assert "food_safety_lockout" not in active and "temp_high:fridge" not in active
    sent = await rig.daemon.db.fetchall("SELECT payload FROM outbox WHERE kind='alarm'")
    states = [(json.loads(r["payload"])["alarm_key"], json.loads(r["payload"])["state"]) for r in sent]
    assert ("food_safety_lockout", "raised") in states and ("food_safety_lockout", "cleared") in states


async def test_silent_slave_only_that_device_offline_then_recovers(rig):
    db = rig.daemon.db
    fridge = rig.plant.devices["bus0.fridge"]
    shelves = rig.plant.devices["bus0.shelves"]
    rig.sim.silence(2, seconds=2.0)
    ok_before = fridge.counters["ok"]
    await wait_for(lambda: not shelves.online)
    # the fridge kept being polled (every 0.02 s) while the shelves were silent
    await wait_for(lambda: fridge.counters["ok"] - ok_before >= 20, what="20 fridge polls")
    assert fridge.online and rig.plant.devices["bus0.io"].online
    await wait_for(lambda: rig.plant.watch.offline() == ["bus0.shelves"])

    async def shelves_alarmed() -> bool:
        return "device_offline:bus0.shelves" in {a["alarm_key"] for a in await repo.active_alarms(db)}
    await wait_for(shelves_alarmed, what="the offline alarm stored")
    assert "device_offline:bus0.fridge" not in {a["alarm_key"] for a in await repo.active_alarms(db)}
    assert all(r.grams is None for r in rig.plant.shelves.snapshot().values())
    assert set((await rig.plant.shelves.wait_stable(0.2)).values()) == {None}  # take-and-go → review
    assert await sell(rig, "A2") == "completed"  # sales of unaffected goods continue
    await wait_for(lambda: shelves.online, timeout_s=10)
    async def shelves_cleared() -> bool:  # the recovery is stored as a cleared alarm
        return not await shelves_alarmed()
    await wait_for(shelves_cleared, 5.0, what="the offline alarm cleared")
    cleared = await db.fetchone("SELECT active, cleared_at FROM alarms WHERE alarm_key='device_offline:bus0.shelves'")
    assert cleared["active"] == 0 and cleared["cleared_at"]


async def test_telemetry_setpoint_and_shelf_deltas(rig):
    db = rig.daemon.db
    temp = rig.plant.temperature
    await rig.until(rig.sim_now() + 20 * MIN)
    await temp.drain()
    rows = await db.fetchall("SELECT * FROM telemetry_1min WHERE point='fridge.cabinet_temp_c'")
    assert len(rows) >= 10 and all(r["min"] <= r["avg"] <= r["max"] for r in rows)
    sent = await db.fetchall("SELECT payload FROM outbox WHERE kind='telemetry'")
    assert len(sent) >= 10 and "cabinet_temp_c" in json.loads(sent[0]["payload"])["points"]

    await temp.set_setpoint(3.0, actor="pytest")
    assert rig.sim.fridge.setpoint_c == pytest.approx(3.0)  # the controller really has it
    with pytest.raises(ValueError):
        await temp.set_setpoint(40.0)

    shelves = rig.plant.shelves
    before = await shelves.wait_stable(3.0)
    assert before[0] == pytest.approx(rig.world.shelf_grams(0), abs=3.0)
    seen = []
    shelves.on_delta(seen.append)
    rig.world.take("F1")  # a cola, 352 g, from shelf 0
    after = await shelves.wait_stable(3.0)
    assert after[0] - before[0] == pytest.approx(-352.0, abs=3.0)
    assert after[1] == pytest.approx(before[1], abs=3.0)
    assert [round(d.delta_g) for d in seen if d.shelf == 0] == [pytest.approx(-352, abs=3)]

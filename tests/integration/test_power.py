"""Mains fail / return, supply voltage and humidity end to end: the simulated I/O module over RTU
on a real pty, the real daemon (VendService guards, Door), real SQLite. Simulated time runs 200x."""

from __future__ import annotations

import asyncio
import json

import pytest

from edge.core.errors import SaleRefused
from edge.ledger import repo
from tests.support.rigs.fridge import start_fridge_rig
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def rig(request, tmp_path):
    """200x: a 20 ms poll is 4 simulated seconds, fine enough to time an outage. A test that only
    waits out long alarm delays asks for more: @pytest.mark.parametrize("rig", [2000], indirect=True)."""
    speed = getattr(request, "param", 200)
    r = await start_fridge_rig(str(tmp_path), speed=speed, poll_s=0.02, restock_grace_s=0)
    await wait_for(lambda: all(d.online for d in r.plant.devices.values()))
    yield r
    await r.stop()


async def events(rig, kind: str) -> list[dict]:
    rows = await rig.daemon.db.fetchall("SELECT data FROM events WHERE kind=? ORDER BY event_id", (kind,))
    return [json.loads(r["data"]) for r in rows]


async def test_mains_fail_stops_sales_locks_the_door_and_return_reports_the_outage(rig):
    power, machine, db = rig.plant.power, rig.daemon.machine, rig.daemon.db
    assert power is not None and machine is not None
    assert (await machine.sell("A1", "card:before"))["status"] == "completed"
    await rig.plant.door.unlock(600_000, "restock", actor="tech")
    await wait_for(lambda: rig.sim.io.locked is False)

    readings: list[tuple[float, bool]] = []  # (daemon clock, mains_ok) of each poll, as the service sees it

    def seen(dev) -> None:
        if dev.online and dev.values.get("mains_ok") is not None:
            readings.append((rig.clock.monotonic(), bool(dev.values["mains_ok"])))

    power.device.subscribe(seen)
    rig.sim.cut_mains()
    cut_at = rig.sim_now()
    await wait_for(lambda: not power.mains.on_mains)
    await wait_for(lambda: rig.sim.io.locked is True)  # the daemon locked it
    with pytest.raises(SaleRefused) as refused:
        await machine.sell("A1", "card:during")
    assert refused.value.reason == "mains_fail" and rig.board_sim.counters["vends"] == 1
    await wait_for(lambda: power.counters["outages"] == 1)
    assert "mains_fail" in {a["alarm_key"] for a in await repo.active_alarms(db)}
    failed = await events(rig, "mains_failed")
    assert len(failed) == 1 and failed[0]["door_locked"] is True
    queued = await db.fetchall("SELECT payload FROM outbox WHERE kind='event'")
    assert any(json.loads(r["payload"])["event"] == "mains_failed" for r in queued)

    await rig.until(cut_at + 900)  # 15 simulated minutes without mains
    rig.sim.restore_mains()
    back_at = rig.sim_now()
    await wait_for(lambda: power.mains.on_mains)
    await wait_for(lambda: power.last_outage_s is not None)
    outage = power.last_outage_s
    # from the first failed reading to the first good one: exact, however late a loaded machine polls
    first_failed = next(t for t, ok in readings if not ok)
    first_good = next(t for t, ok in readings if ok and t > first_failed)
    assert outage == pytest.approx(first_good - first_failed, abs=0.5), (outage, first_failed, first_good)
    assert abs(outage - (back_at - cut_at)) < 30 + _poll_lag(readings), (outage, back_at - cut_at)
    restored = await events(rig, "mains_restored")
    assert len(restored) == 1 and restored[0]["outage_s"] == outage
    assert "mains_fail" not in {a["alarm_key"] for a in await repo.active_alarms(db)}
    assert (await machine.sell("A1", "card:after"))["status"] == "completed"


def _poll_lag(readings: list[tuple[float, bool]]) -> float:
    """The longest gap between two polls (simulated seconds): how late a reading could come."""
    times = [t for t, _ in readings]
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


async def test_a_blip_shorter_than_the_confirm_time_is_not_an_outage(rig):
    power = rig.plant.power
    rig.sim.io.mains_ok = False
    rig.sim.io.tick(0.0)
    rig.sim.io.mains_ok = True  # before any poll could see it twice
    rig.sim.io.tick(0.0)
    await rig.until(rig.sim_now() + 120)
    assert power.mains.on_mains and power.counters["outages"] == 0


@pytest.mark.parametrize("rig", [2000], indirect=True)  # 1,900 simulated seconds: ~1 s, not ~10
async def test_voltage_and_humidity_are_telemetry_and_alarms(rig):
    power, db = rig.plant.power, rig.daemon.db
    rig.sim.io.supply_v, rig.sim.io.humidity_pct = 198.0, 91.0
    t0 = rig.sim_now()
    await rig.until(t0 + 1900)  # past the 60 s voltage and 30 min humidity delays
    await wait_for(
        lambda: (
            {"supply_low:io", "humidity_high:io"} <= set(power._states)
            and all(power._states[k].active for k in ("supply_low:io", "humidity_high:io"))
        )
    )
    keys = {"supply_low:io", "humidity_high:io"}
    async with asyncio.timeout(5):  # the service stores the alarms just after its rule states flip
        while not keys <= {a["alarm_key"] for a in await repo.active_alarms(db)}:
            await asyncio.sleep(0.01)
    rows = await db.fetchall(
        "SELECT point, avg FROM telemetry_1min WHERE point LIKE 'io.%' ORDER BY minute DESC"
    )
    latest = {}
    for r in rows:
        latest.setdefault(r["point"], r["avg"])
    assert latest["io.supply_v"] == pytest.approx(198.0) and latest["io.humidity_pct"] == pytest.approx(91.0)
    rig.sim.io.supply_v, rig.sim.io.humidity_pct = 230.0, 50.0
    await wait_for(
        lambda: not power._states["supply_low:io"].active and not power._states["humidity_high:io"].active
    )


async def test_an_outage_that_outlasts_the_backup_supply_is_measured_from_its_start(rig):
    from edge.daemon import Daemon

    power = rig.plant.power
    rig.sim.cut_mains()
    cut_at = rig.sim_now()
    await wait_for(lambda: power.counters["outages"] == 1)
    config = rig.daemon.config
    await rig.daemon.stop()  # the backup supply runs out; the machine is dark
    await rig.until(cut_at + 600)
    rig.daemon = Daemon(config, clock=rig.clock, time_scale=rig.sim.clock.speed)
    await rig.daemon.start()
    rig.plant = rig.daemon.plant
    again = rig.plant.power
    assert not again.mains.on_mains  # the open outage was loaded from the ledger
    rig.sim.restore_mains()
    back_at = rig.sim_now()
    await wait_for(lambda: again.last_outage_s is not None)
    assert abs(again.last_outage_s - (back_at - cut_at)) < 30, (again.last_outage_s, back_at - cut_at)
    assert len(await events(rig, "mains_failed")) == 1 and len(await events(rig, "mains_restored")) == 1

"""Spiral motor-current trends on the live daemon: the real VendService and the vend board simulator
on a pty, the current carried in VEND_DONE's long form (docs/protocols/vend-board.md, "Motor
current"). A spiral that draws more raises "service soon" for that slot from its current alone; a
binding spiral (hw_sim.wear) is flagged before its first jam; a board that sends the short form
(no current) is judged on run time alone and never alarms on a current it did not send."""

from __future__ import annotations

import pytest

from edge.ledger import repo
from hw_sim.wear import DAY, Spiral
from tests.integration.test_fridge_services import rig  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(90)


async def sell(r, slot: str, n: int) -> list[str]:
    machine, statuses = r.daemon.machine, []
    for i in range(n):
        await machine.restock(slot, None, actor="test")
        r.board_sim.stock[slot] = 5  # the technician filled the spiral too
        statuses.append((await machine.sell(slot, f"card:{slot}-{i}"))["status"])
    await r.daemon.slot_trends.drain()
    return statuses


async def service_soon(r) -> dict[str, dict]:
    return {a["alarm_key"]: a for a in await repo.active_alarms(r.daemon.db) if a["kind"] == "service_soon"}


async def test_a_spiral_drawing_more_current_is_flagged_by_its_current(rig):  # noqa: F811
    assert await sell(rig, "A1", 22) == ["completed"] * 22  # learns A1's healthy current (~260 mA)
    await sell(rig, "A2", 22)
    assert await service_soon(rig) == {}
    rig.board_sim.motor_ma = 380  # the motor works harder; the spiral still turns at its usual speed
    await sell(rig, "A1", 8)
    alarms = await service_soon(rig)
    assert set(alarms) == {"service_soon:slot:A1"}
    watch = rig.daemon.slot_trends.watches["A1"]
    assert watch.current.tripped and not watch.run_time.tripped
    assert 240 <= watch.current.baseline <= 280 and rig.board_sim.counters["jams"] == 0


async def test_a_binding_spiral_is_flagged_before_it_jams(rig):  # noqa: F811
    sim = rig.board_sim
    sim.attach(Spiral("A1", wear_start_s=3 * DAY, friction_per_day=0.25, seed=3))
    raised_at = None
    for i in range(120):  # 8 vends a simulated day
        sim.wear_time_s = i * DAY / 8
        statuses = await sell(rig, "A1", 1)
        if "service_soon:slot:A1" in await service_soon(rig):
            raised_at = sim.wear_time_s
            break
        assert statuses == ["completed"], f"jammed at day {sim.wear_time_s / DAY:.1f} before any warning"
    assert raised_at is not None and sim.counters["jams"] == 0
    assert rig.daemon.slot_trends.watches["A1"].current.tripped  # current is the earlier signal here


async def test_a_board_without_current_is_judged_on_run_time_alone(rig):  # noqa: F811
    rig.board_sim.report_current = False  # short VEND_DONE: no current figure at all
    await sell(rig, "A1", 22)
    rig.board_sim.motor_ma = 600  # would trip at once if it were reported
    await sell(rig, "A1", 8)
    assert await service_soon(rig) == {}
    watch = rig.daemon.slot_trends.watches["A1"]
    assert watch.current.baseline is None and watch.current.learn == [] and watch.run_time.baseline is not None
    rig.board_sim.motor_ms = 1700  # the run-time trend still watches the slot
    await sell(rig, "A1", 10)
    assert set(await service_soon(rig)) == {"service_soon:slot:A1"}

"""Device faults against the real daemon: the USB-serial adapter pulled out (pty removed) and plugged
back (pty re-created) mid-sale and while idle, and a board answering garbage for a while. The daemon
stays up, raises `device_offline:vend_board`, refuses sales meanwhile, recovers on its own and never
dispenses twice."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest

from edge.core.errors import SaleRefused
from edge.ledger import repo
from tests.reliability.inproc import InprocRig, start_inproc

pytestmark = pytest.mark.timeout(60)
OFFLINE = "device_offline:vend_board"


@pytest.fixture
async def rig(tmp_path: pathlib.Path) -> AsyncIterator[InprocRig]:
    r = await start_inproc(tmp_path, speed=20.0)
    yield r
    await r.stop()


def _all_tasks_running(rig: InprocRig) -> bool:
    """Every supervised loop is alive and none crashed (the watchdog pinger exits at once without systemd)."""
    status = rig.daemon.supervisor.status()
    return all((t["running"] or name == "watchdog") and t["restarts"] == 0 for name, t in status.items())


async def test_unplug_mid_sale_settles_the_sale_after_replug_without_resending(rig: InprocRig) -> None:
    rig.sim.motor_ms = 8000  # 0.4 s at speed 20: long enough to pull the cable while the spiral turns
    sale = asyncio.create_task(rig.machine.sell("A1", "card:1"))
    await rig.wait_for(lambda: rig.sim.vend_frames_received == 1, what="VEND frame at the board")
    await rig.sim.unplug()
    order = await sale
    assert order["status"] == "pending"  # the outcome is unknown: not completed, not failed, not re-sent
    await rig.wait_for(lambda: rig.alarms(), what="an alarm")
    assert OFFLINE in await rig.alarms()
    with pytest.raises(SaleRefused) as refused:
        await rig.machine.sell("A2", "card:2")
    assert refused.value.reason in ("reconciling", "board_offline")
    await rig.wait_for(lambda: rig.sim.counters["vends"] == 1, what="the motor to finish while unplugged")

    await rig.sim.replug()
    await rig.wait_for(lambda: rig.machine.vend.unreconciled == 0, what="reconciliation after replug")
    doc = await repo.order_doc(rig.daemon.db, order["order_id"])  # type: ignore[arg-type]
    assert doc["status"] == "completed"
    assert rig.sim.total_dispensed == 1 and rig.sim.counters["vends"] == 1 and rig.sim.vend_frames_received == 1
    assert (await repo.stock(rig.daemon.db))["A1"].count == 7 == rig.sim.stock["A1"]  # type: ignore[arg-type]
    await rig.wait_for(lambda: _not_offline(rig), what="the offline alarm to clear")
    assert (await rig.machine.sell("A2", "card:3"))["status"] == "completed"
    assert _all_tasks_running(rig)


async def _not_offline(rig: InprocRig) -> bool:
    return OFFLINE not in await rig.alarms()


async def test_flapping_cable_while_idle_alarms_each_time_and_recovers(rig: InprocRig) -> None:
    for _ in range(3):
        await rig.sim.unplug()
        await rig.wait_for(lambda: _offline(rig), what="device_offline alarm")
        with pytest.raises(SaleRefused) as refused:
            await rig.machine.sell("B1", "card:x")
        assert refused.value.reason == "board_offline"
        await rig.sim.replug()
        await rig.wait_for(lambda: _not_offline(rig), what="alarm cleared after replug")
    assert rig.daemon.board is not None
    await rig.daemon.board.wait_connected(5.0)
    assert (await rig.machine.sell("B1", "card:y"))["status"] == "completed"
    assert rig.sim.total_dispensed == 1
    raised = await rig.daemon.db.fetchall(  # type: ignore[union-attr]
        "SELECT data FROM events WHERE kind='alarm_raised' AND data LIKE '%device_offline%'")
    assert len(raised) == 3  # one alarm per outage, not one per poll
    assert _all_tasks_running(rig)


async def _offline(rig: InprocRig) -> bool:
    return OFFLINE in await rig.alarms()


async def test_board_answering_garbage_for_a_while_never_double_dispenses(rig: InprocRig) -> None:
    rig.sim.garble(10)  # every reply corrupted, for longer than the driver's 4 tries last
    first = await rig.machine.sell("C1", "card:1")
    # the motor may or may not have run: the sale is parked as unknown, not retried blindly
    assert first["status"] in ("pending", "completed")
    await rig.wait_for(lambda: rig.machine.vend.unreconciled == 0, timeout_s=20, what="reconciliation")
    for i in range(5):
        assert (await rig.machine.sell("C2", f"card:{i}"))["status"] == "completed"
    assert rig.daemon.board is not None and rig.daemon.board.counters["crc_errors"] >= 1
    done = await rig.completed_by_slot()
    assert done.get("C1", 0) == rig.sim.dispensed["C1"] <= 1
    assert done["C2"] == rig.sim.dispensed["C2"] == 5
    assert rig.sim.counters["vends"] == rig.sim.total_dispensed  # one motor run per paid order
    assert (await repo.stock(rig.daemon.db))["C1"].count == rig.sim.stock["C1"]  # type: ignore[arg-type]
    assert await rig.daemon.db.integrity_ok()  # type: ignore[union-attr]
    assert _all_tasks_running(rig)


@pytest.mark.skip(reason="not reached yet: the daemon does not run the Modbus services (fridge, weight "
                         "shelves, door I/O) yet — hook: hw_sim.modbus silence(unit, polls), expect "
                         "device_offline:<device> and the fridge out of service, recovery on return")
async def test_modbus_bus_silent() -> None:
    raise AssertionError("write me when edge.daemon wires edge.services.temperature/shelves")


@pytest.mark.skip(reason="not reached yet: the daemon does not run take-and-go cameras yet — hook: stop "
                         "hw_sim.camera.server for one shelf, expect a camera alarm and sessions going to "
                         "needs_review instead of charging")
async def test_camera_dead() -> None:
    raise AssertionError("write me when edge.daemon wires take-and-go")

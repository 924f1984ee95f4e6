"""Daemon lifecycle against the simulated plant and board on real ptys, with a real ledger:

- a start that fails half-way (the web port is taken) locks the door a previous run left unlocked
  and stops everything it started;
- stop refuses new sales and door unlocks at once, locks the door, lets the vend in flight finish
  and be journaled, then stops.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from edge.config import load_config
from edge.core.errors import SaleRefused
from edge.daemon import Daemon
from hw_sim.modbus import SimModbusPlant
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram
from tests.support.rigs.fridge import plant_config, start_fridge_rig
from tests.support.rigs.vend import write_config
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(40)


async def test_a_start_that_fails_half_way_locks_the_door_and_stops_what_it_started(tmp_path):
    doc = load_demo_planogram()
    sim = SimModbusPlant(FridgeWorld(doc), speed=200.0, seed=1)
    link = await sim.serve_rtu(str(tmp_path / "ttyMODBUS"))
    board_sim = SimVendBoard({s["slot_id"]: s["capacity"] for s in doc["slots"] if s.get("shelf") is None})
    board_link = await board_sim.serve_pty(str(tmp_path / "ttyVEND"))
    sim.io.locked = False  # a previous run died with the door unlocked
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = load_config(
            write_config(
                tmp_path, board_port=board_link, web_port=port, extra=plant_config(link, poll_s=0.03)
            )
        )
        daemon = Daemon(cfg)
        with pytest.raises(OSError):
            await daemon.start()
        assert sim.io.locked  # locked before the error came out of start()
        assert all(i.task is not None and i.task.done() for i in daemon.supervisor.tasks.values())
        assert daemon._stopped.is_set()
    finally:
        taken.close()
        await board_sim.stop()
        await sim.close()


async def test_stop_refuses_sales_and_unlocks_locks_the_door_and_finishes_the_vend_in_flight(tmp_path):
    rig = await start_fridge_rig(str(tmp_path), speed=20, poll_s=0.03, restock_grace_s=0)
    machine, db, door = rig.daemon.machine, rig.daemon.db, rig.plant.door
    try:
        await door.unlock(600_000, "restock", actor="pytest")
        assert rig.sim.io.locked is False
        before = (await db.fetchone("SELECT COUNT(*) AS n FROM orders"))["n"]
        sale = asyncio.create_task(machine.sell("A1", "card:in-flight"))
        async def ordered() -> bool:
            return bool((await db.fetchone("SELECT COUNT(*) AS n FROM orders"))["n"] > before)
        await wait_for(ordered, 5.0, step_s=0.005, what="the in-flight order")
        stopping = asyncio.create_task(rig.daemon.stop())
        await wait_for(lambda: machine.mode == "stopping", 5.0, what="the daemon to start stopping")
        with pytest.raises(SaleRefused, match="stopping"):
            await machine.sell("A2", "card:too-late")
        with pytest.raises(SaleRefused, match="stopping"):
            await door.unlock(1000, "too late", actor="pytest")
        order = await sale
        assert order["status"] == "completed"  # the vend that had started finished and was recorded
        await stopping
        assert rig.sim.io.locked  # the door was locked on the way down
    finally:
        if not rig.daemon._stopped.is_set():
            await rig.daemon.stop()
        await rig.board_sim.stop()
        await rig.sim.close()


async def test_a_relock_the_io_module_misses_is_retried_until_the_door_is_locked(tmp_path):
    """The unlock window ends while the I/O module does not answer: the door task keeps trying (before:
    one attempt, a log line, and the door stayed unlocked)."""
    from drivers.modbus import ModbusHub, RegisterMap
    from edge.config import DoorConfig
    from edge.ledger.db import LedgerDB
    from edge.services.door import Door, IoModuleDoor
    from tests.support.rigs.fridge import PlantClock

    sim = SimModbusPlant(FridgeWorld(load_demo_planogram()), speed=200.0, wire_timing=False)
    link = await sim.serve_rtu(str(tmp_path / "ttyMB"))
    clock = PlantClock(sim.clock)
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"), clock)
    hub = ModbusHub("bus0", serial_port=link, timeout_s=0.05, retries=0, gap_ms=0)
    io = hub.add_device("io", 3, RegisterMap.builtin("io_module"), poll_interval_s=0.01, offline_after=2)
    await hub.start()
    door = Door(db, IoModuleDoor(io), DoorConfig(unlock_ms=8000), clock=clock, time_scale=200.0, tick_s=0.01)
    task = asyncio.create_task(door.run(), name="door")
    try:
        await wait_for(lambda: io.online)
        await door.start()  # as the daemon does: locked and read once, the door is "safe"
        assert door.safe
        await door.unlock(20_000, "restock", actor="pytest")  # 0.1 s of real time at 200x
        assert sim.io.locked is False
        sim.silence(3, seconds=0.6)  # the module is deaf when the window ends
        await wait_for(lambda: door._relock_failed, timeout_s=3.0, what="a relock attempt to fail")
        assert sim.io.locked is False  # the relock could not be told yet
        await wait_for(lambda: sim.io.locked, timeout_s=3.0)  # retried every tick until it was
        # the service marks itself locked once the write's reply is back (a tick after the module flips)
        await wait_for(lambda: door.locked, timeout_s=3.0)
        assert door.locked is True
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.stop()
        await db.close()
        await sim.close()

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
from edge.demo.fridge import plant_config, start_fridge_rig
from edge.demo.setup import write_config
from hw_sim.modbus import SimModbusPlant
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram

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
        async with asyncio.timeout(5):
            while (await db.fetchone("SELECT COUNT(*) AS n FROM orders"))["n"] == before:
                await asyncio.sleep(0.005)
        stopping = asyncio.create_task(rig.daemon.stop())
        await asyncio.sleep(0)
        assert machine.mode == "stopping"
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

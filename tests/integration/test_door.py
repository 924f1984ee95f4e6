"""The door over both backends: the Modbus I/O module (RTU on a pty) and the vend board (pty).

Unlocks are journaled before the command, the door relocks by itself, listeners hear openings and
closings, a door left open raises its alarm, and start/stop lock it (fail safe).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from drivers.errors import DeviceError
from drivers.modbus import ModbusHub, RegisterMap
from drivers.vend_board import VendBoard
from edge.config import DoorConfig
from edge.core.errors import SaleRefused
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.door import Door, IoModuleDoor, VendBoardDoor
from hw_sim.modbus import SimModbusPlant
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram
from tests.support.rigs.fridge import PlantClock
from tests.support.waits import poll, wait_for

pytestmark = pytest.mark.timeout(30)
SPEED = 200.0  # simulated seconds per real second


async def wait_alarm(db: LedgerDB, key: str, active: bool = True) -> dict | None:
    """Poll the ledger until alarm `key` is (or is no longer) active; returns its row."""
    alarms = await poll(lambda: repo.active_alarms(db), lambda rows: any(a["alarm_key"] == key for a in rows) == active,
                        3.0, step_s=0.01, what=f"alarm {key} active={active}")
    return next((a for a in alarms if a["alarm_key"] == key), None)


async def events(db: LedgerDB, *kinds: str) -> list[tuple[str, dict]]:
    marks = ",".join("?" * len(kinds))
    rows = await db.fetchall(f"SELECT kind, data FROM events WHERE kind IN ({marks}) ORDER BY event_id", kinds)
    return [(r["kind"], json.loads(r["data"])) for r in rows]


@pytest.fixture
async def io_door(tmp_path):
    sim = SimModbusPlant(FridgeWorld(load_demo_planogram()), speed=SPEED, wire_timing=False)
    link = await sim.serve_rtu(str(tmp_path / "ttyMB"))
    clock = PlantClock(sim.clock)
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"), clock)
    hub = ModbusHub("bus0", serial_port=link, timeout_s=0.05, retries=0, gap_ms=0)
    io = hub.add_device("io", 3, RegisterMap.builtin("io_module"), poll_interval_s=0.01, offline_after=2)
    await hub.start()
    await wait_for(lambda: io.online)
    door = Door(db, IoModuleDoor(io), DoorConfig(unlock_ms=8000, open_too_long_s=120), clock=clock,
                time_scale=SPEED, tick_s=0.01)
    yield sim, door, db
    await door.stop()
    await hub.stop()
    await db.close()
    await sim.close()


async def test_io_module_door_journal_relock_listeners_and_alarm(io_door):
    sim, door, db = io_door
    sim.io.locked = False  # a crash left the door unlocked
    await door.start()
    assert sim.io.locked and door.state()["locked"] and door.state()["closed"]
    task = asyncio.create_task(door.run(), name="door")
    heard: list[tuple[str, float | None]] = []
    door.on_opened(lambda ev: heard.append((ev.kind, None)))
    door.on_closed(lambda ev: heard.append((ev.kind, ev.open_s)))
    try:
        assert not sim.open_door()  # locked: the customer cannot pull it open
        await door.unlock(reason="restock", actor="tech-anna")
        assert not sim.io.locked and sim.open_door()
        await wait_for(lambda: heard == [("opened", None)] and door.state()["open_since"] is not None)
        await wait_for(lambda: sim.io.locked)  # relocked after unlock_ms (8 s simulated), door still open
        alarm = await wait_alarm(db, "door_open_too_long")
        assert alarm["severity"] == "warning" and alarm["data"]["open_s"] >= 120
        sim.close_door()
        await wait_alarm(db, "door_open_too_long", active=False)
        await wait_for(lambda: len(heard) == 2)
        assert heard[1][0] == "closed" and heard[1][1] >= 120
        journal = await events(db, "door_unlock_requested", "door_unlocked", "door_opened", "door_closed")
        assert [k for k, _ in journal] == ["door_unlock_requested", "door_unlocked", "door_opened", "door_closed"]
        assert journal[0][1]["actor"] == "tech-anna" and journal[0][1]["seq"] == journal[1][1]["seq"]

        sim.silence(3)  # the module stops answering: the unlock fails, the request is still on record
        with pytest.raises(DeviceError):
            await door.unlock(reason="customer")
        sim.unsilence(3)
        journal = await events(db, "door_unlock_requested", "door_unlock_failed")
        assert [k for k, _ in journal][-2:] == ["door_unlock_requested", "door_unlock_failed"]
        assert sim.io.locked
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_vend_board_door_relocks_by_itself_and_detects_forcing(tmp_path):
    sim = SimVendBoard({"A1": 5}, speed=SPEED)
    link = await sim.serve_pty(str(tmp_path / "ttyVEND"))
    board = VendBoard(link, reply_timeout_s=0.3)
    await board.start()
    await board.wait_connected(3.0)
    clock = PlantClock(type("C", (), {"now": staticmethod(lambda: 0.0)})())
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"), clock)
    door = Door(db, VendBoardDoor(board), DoorConfig(unlock_ms=8000), clock=clock, tick_s=0.01)
    task = asyncio.create_task(door.run(), name="door")
    try:
        await door.start()
        assert sim.door_locked and door.state()["locked"]
        await door.unlock(4000, "service", actor="tech")
        assert not sim.door_locked
        await wait_for(lambda: sim.door_locked and door.state()["locked"])  # the board relocked (4 s sim)
        assert sim.open_door(force=True)  # pried open while locked
        alarm = await wait_alarm(db, "door_forced")
        assert alarm["severity"] == "critical" and door.state()["closed"] is False
        sim.close_door()
        await wait_for(lambda: door.state()["closed"])
        journal = await events(db, "door_unlock_requested", "door_unlocked")
        assert [k for k, _ in journal] == ["door_unlock_requested", "door_unlocked"]
        await door.stop()
        assert sim.door_locked
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await board.stop()
        await db.close()
        await sim.stop()


async def test_stop_lock_outlasts_a_deaf_moment_and_is_sent_once(io_door):
    """Ctrl-C on a loaded machine: the module misses the stop's lock command. The lock is retried
    (before: a door confirmed safe got one attempt and the stop logged door_lock_on_stop_failed), and the
    service's final stop does not send it again (a second command that could time out for nothing)."""
    from structlog.testing import capture_logs

    sim, door, _ = io_door
    await door.start()
    assert door.safe
    sim.io.locked = False  # as if an unlock window were still open
    sim.silence(3, seconds=0.3)
    with capture_logs() as logs:
        assert await door.shutdown_lock(timeout_s=3.0)
        assert sim.io.locked
        sim.silence(3)  # deaf for good: a lock now could only fail
        await door.stop()
        sim.unsilence(3)
    assert not [e for e in logs if e["event"] == "door_lock_on_stop_failed"]
    with pytest.raises(SaleRefused):
        await door.unlock(reason="customer")  # refused for good once stopping

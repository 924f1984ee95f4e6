"""VendBoard driver against the simulated board over a real pty pair and real TCP.

What a user would see is the simulator's dispensed count and stock: every test checks them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from drivers.errors import DeviceDisconnected, DeviceFault, DeviceTimeout
from drivers.vend_board import DoorState, VendBoard, VendOutcome, VendRefused
from hw_sim.vend_board import SimVendBoard, run_in_thread
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(15)

SPEED = 100.0  # 1200 ms motor -> 12 ms
SLOTS = [f"{row}{col}" for row in "ABCDE" for col in range(1, 7)]


def _stock(n: int = 5) -> dict[str, int]:
    return dict.fromkeys(SLOTS, n)


@dataclass
class Rig:
    sim: SimVendBoard
    board: VendBoard
    url: str


async def _serve(sim: SimVendBoard, kind: str, tmp_path) -> str:
    if kind == "pty":
        return await sim.serve_pty(str(tmp_path / "ttyVEND0"))
    return f"socket://127.0.0.1:{await sim.serve_tcp()}"


def _board(url: str) -> VendBoard:
    return VendBoard(url, reply_timeout_s=0.1, retries=3, vend_timeout_s=3.0, reconnect_max_s=0.2)


@pytest.fixture(params=["pty", "tcp"])
async def rig(request, tmp_path) -> AsyncIterator[Rig]:
    sim = SimVendBoard(_stock(), speed=SPEED, seed=1)
    url = await _serve(sim, request.param, tmp_path)
    board = _board(url)
    await board.start()
    await board.wait_connected(2.0)
    yield Rig(sim, board, url)
    await board.stop()
    await sim.stop()


async def test_hundred_vends_dispense_exactly_the_ok_results(rig: Rig) -> None:
    results = [await rig.board.vend(SLOTS[i % len(SLOTS)], seq=i + 1) for i in range(100)]
    ok = [r for r in results if r.outcome is VendOutcome.OK]
    assert len(ok) == 100
    assert rig.sim.total_dispensed == 100
    for slot in SLOTS:
        sold = sum(1 for r in ok if r.slot == slot)
        assert rig.sim.dispensed[slot] == sold
        assert rig.sim.stock[slot] == 5 - sold
    assert all(1100 <= r.motor_ms <= 1300 for r in ok)  # board-reported motor time, unscaled
    assert rig.board.counters["frames_sent"] >= 100 and rig.board.counters["crc_errors"] == 0


async def test_fault_outcomes_leave_stock_untouched(rig: Rig) -> None:
    sim, board = rig.sim, rig.board
    sim.jam("A1")
    sim.no_drop("A2")
    sim.overcurrent("A3")
    sim.stock["A4"] = 0
    jam, no_drop = await board.vend("A1", 1), await board.vend("A2", 2)
    over, empty = await board.vend("A3", 3), await board.vend("A4", 4)
    assert jam.outcome is VendOutcome.JAM and 500 <= jam.motor_ms <= 700
    assert no_drop.outcome is VendOutcome.DROP_NOT_DETECTED and no_drop.motor_ms >= 1100
    assert over.outcome is VendOutcome.MOTOR_OVERCURRENT
    assert empty.outcome is VendOutcome.EMPTY and empty.motor_ms == 0
    assert sim.total_dispensed == 0
    assert [sim.stock[s] for s in ("A1", "A2", "A3", "A4")] == [5, 5, 5, 0]
    assert (await board.vend("A1", 5)).outcome is VendOutcome.OK  # the fault was one-shot
    assert sim.dispensed["A1"] == 1


async def test_garbled_replies_are_retried_with_same_seq_and_never_double_dispense(rig: Rig) -> None:
    sim, board = rig.sim, rig.board
    for i in range(12):
        sim.garble(1 + i % 4)  # hits the ACK, the VEND_DONE or both, by turns
        result = await board.vend(SLOTS[i], seq=100 + i)
        assert result.outcome is VendOutcome.OK and result.seq == 100 + i
    assert sim.total_dispensed == 12
    assert sim.counters["vends"] == 12  # motor ran once per seq
    assert sim.vend_frames_received > 12  # ...although frames were resent
    assert board.counters["crc_errors"] + board.counters["garbage_bytes"] > 0
    assert board.counters["retries"] > 0


async def test_silenced_request_is_resent_with_same_seq(rig: Rig) -> None:
    rig.sim.silence(2)
    result = await rig.board.vend("B2", seq=7)
    assert result.outcome is VendOutcome.OK
    assert rig.sim.counters["frames_in"] == 1 + 3  # HELLO, then two lost on the way, the third one acted on
    assert rig.sim.vend_frames_received == 1 and rig.sim.total_dispensed == 1
    assert rig.board.counters["timeouts"] == 2 and rig.board.counters["retries"] == 2


async def test_board_that_never_answers_times_out_and_nothing_is_dispensed(rig: Rig) -> None:
    rig.sim.silence(4)  # retries=3 -> four tries, all ignored
    with pytest.raises(DeviceTimeout):
        await rig.board.vend("B3", seq=8)
    assert rig.sim.total_dispensed == 0
    assert (await rig.board.query_vend(8)).state == "unknown"


async def test_duplicate_seq_dispenses_once(rig: Rig) -> None:
    first = await rig.board.vend("C1", seq=11)
    again = await rig.board.vend("C1", seq=11)
    assert first == again
    assert rig.sim.total_dispensed == 1 and rig.sim.stock["C1"] == 4
    assert rig.sim.counters["duplicates"] == 1


async def test_query_vend_reports_done_in_progress_and_unknown(rig: Rig) -> None:
    await rig.board.vend("D1", seq=21)
    done = await rig.board.query_vend(21)
    assert (done.state, done.outcome, done.slot) == ("done", VendOutcome.OK, "D1")
    unknown = await rig.board.query_vend(999)
    assert (unknown.state, unknown.outcome, unknown.slot) == ("unknown", None, None)
    rig.sim.speed = 2.0  # 600 ms motor: slow enough to ask while it turns
    frames = rig.sim.vend_frames_received
    running = asyncio.create_task(rig.board.vend("D2", seq=22))
    await wait_for(lambda: rig.sim.vend_frames_received > frames, 5.0, what="the VEND frame at the board")
    assert (await rig.board.query_vend(22)).state == "in_progress"
    status = await rig.board.status()
    assert status.busy and status.firmware.startswith("simvend")
    assert (await running).outcome is VendOutcome.OK
    assert rig.sim.total_dispensed == 2


async def test_unplug_fails_pending_fast_and_driver_reconnects_by_itself(rig: Rig) -> None:
    sim, board = rig.sim, rig.board
    sim.speed = 4.0  # 300 ms motor: the cable goes while it turns
    frames = sim.vend_frames_received
    pending = asyncio.create_task(board.vend("E1", seq=31))
    await wait_for(lambda: sim.vend_frames_received > frames, 5.0, what="the VEND frame at the board")
    t0 = time.monotonic()
    await sim.unplug()
    with pytest.raises(DeviceDisconnected):
        await pending
    assert time.monotonic() - t0 < 1.5  # fails at once: not after the 3 s vend timeout (bound generous for load)
    with pytest.raises(DeviceDisconnected):
        await board.status()  # no link: fails at once, not after a timeout
    sim.speed = SPEED
    await sim.replug()
    await board.wait_connected(2.0)
    assert board.connected and board.counters["reconnects"] == 1
    # Reconciliation: the board kept turning while the cable was out; ask it, never re-vend blindly.
    async with asyncio.timeout(3.0):
        while (reconciled := await board.query_vend(31)).state != "done":
            await asyncio.sleep(0.05)
    assert reconciled.outcome is VendOutcome.OK and sim.dispensed["E1"] == 1
    assert (await board.vend("E2", seq=32)).outcome is VendOutcome.OK
    assert sim.dispensed["E2"] == 1


async def test_door_unlock_relocks_by_itself_and_reports_events(rig: Rig) -> None:
    sim, board = rig.sim, rig.board
    events: list[DoorState] = []
    board.on_event(events.append)
    assert sim.open_door() is False  # locked
    await board.unlock_door(3000, seq=41)  # 3 s board time = 50 ms here
    assert await board.door_state() == DoorState(closed=True, locked=False)
    assert sim.open_door() is True
    # time is the subject: the unlock window (a 50 ms timer on this loop) expires while the door is open;
    # this sleep's timer is later on the same loop, so it always fires after the window's
    await asyncio.sleep(0.1)
    assert await board.door_state() == DoorState(closed=False, locked=False)
    sim.close_door()
    await wait_for(lambda: len(events) == 3, 5.0, what="the board's door event for the close")
    assert await board.door_state() == DoorState(closed=True, locked=True)
    assert events == [DoorState(True, False), DoorState(False, False), DoorState(True, True)]
    await board.unlock_door(3000, seq=41)  # same seq again: not a second unlock
    assert await board.door_state() == DoorState(closed=True, locked=True)


async def test_light_and_status(rig: Rig) -> None:
    await rig.board.set_light(True)
    assert rig.sim.light_on is True
    status = await rig.board.status()
    assert status.door == DoorState(closed=True, locked=True) and not status.busy
    assert {"tx", "rx"} <= {direction for _, direction, _ in rig.board.frame_log}


async def test_bad_slot_is_refused_without_dispense(rig: Rig) -> None:
    with pytest.raises(DeviceFault) as info:
        await rig.board.vend("Z9", seq=51)
    assert isinstance(info.value, VendRefused) and info.value.reason == "bad_slot"
    with pytest.raises(ValueError):
        await rig.board.vend("A0", seq=52)
    assert rig.sim.total_dispensed == 0


async def test_second_controller_gets_busy_while_motor_runs() -> None:
    sim = SimVendBoard(_stock(), speed=2.0)
    url = f"socket://127.0.0.1:{await sim.serve_tcp()}"
    one, two = _board(url), _board(url)
    try:
        for b in (one, two):
            await b.start()
            await b.wait_connected(2.0)
        first = asyncio.create_task(one.vend("A1", seq=1))
        await wait_for(lambda: sim.vend_frames_received == 1, 5.0, what="the first VEND frame")  # motor turns
        with pytest.raises(VendRefused) as info:
            await two.vend("A2", seq=2)
        assert info.value.reason == "busy"
        assert (await first).outcome is VendOutcome.OK
        assert sim.dispensed == {**dict.fromkeys(SLOTS, 0), "A1": 1}
    finally:
        await one.stop()
        await two.stop()
        await sim.stop()


async def test_start_without_port_then_board_appears(tmp_path) -> None:
    path = str(tmp_path / "ttyLATE")
    board = _board(path)
    await board.start()  # must not raise
    assert not board.connected
    with pytest.raises(DeviceDisconnected):
        await board.wait_connected(0.1)
    sim = SimVendBoard(_stock(), speed=SPEED)
    try:
        await sim.serve_pty(path)
        await board.wait_connected(2.0)
        assert (await board.vend("A1", seq=1)).outcome is VendOutcome.OK
        assert sim.total_dispensed == 1
    finally:
        await board.stop()
        await sim.stop()


@pytest.mark.parametrize("kind", ["pty", "tcp"])
async def test_sim_in_a_thread_serves_a_driver_in_another_loop(kind: str, tmp_path) -> None:
    sim = SimVendBoard(_stock(), speed=SPEED)
    handle = run_in_thread(sim, link_path=str(tmp_path / "ttyT") if kind == "pty" else None)
    board = _board(handle.url)
    try:
        await board.start()
        await board.wait_connected(2.0)
        handle.call(sim.jam, "A1")
        assert (await board.vend("A1", seq=1)).outcome is VendOutcome.JAM
        assert (await board.vend("A1", seq=2)).outcome is VendOutcome.OK
        assert handle.call(lambda: sim.total_dispensed) == 1
    finally:
        await board.stop()
        handle.stop()  # joins the sim thread; needs nothing from this loop

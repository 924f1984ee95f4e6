"""When the driver may send a VEND again, against the board written from the doc (over its pty).

The rule (docs/protocols/vend-board.md): after an ACK the controller never sends that VEND again, and a
retry never goes to a board that was reset since. Found by the stateful test under load: the daemon's
loop was held up past the reply deadline while the board's ACK was already read; asyncio then runs the
data callback and the deadline in the same turn, the deadline won, the ACK was thrown away and the VEND
sent again — after the board had reset, addressed to the boot that had ACKed it.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator

import pytest

from drivers.vend_board import BoardRebooted, VendBoard, VendInterrupted, VendOutcome
from drivers.vend_board.messages import VendReq
from tests.adversarial.board import AdversarialBoard, Fault

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def board(tmp_path: pathlib.Path) -> Iterator[AdversarialBoard]:
    peer = AdversarialBoard(str(tmp_path / "tty"), {"A1": 3}, memory=8, seed=3)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def stall_loop_after_first_vend(driver: VendBoard, stall_s: float) -> None:
    """Block the event loop for ``stall_s`` 50 ms after the first VEND frame is written (a daemon busy
    with something synchronous, or not scheduled on a loaded machine)."""
    loop = asyncio.get_running_loop()
    armed = [True]

    def sent(frame: object) -> None:
        if armed[0] and isinstance(frame, VendReq):
            armed[0] = False
            loop.call_later(0.05, time.sleep, stall_s)

    driver.on_frame_sent = sent


async def test_an_ack_read_while_the_deadline_passed_is_kept_and_the_vend_not_resent(board: AdversarialBoard) -> None:
    # ACK at 0.2 s, motor done and the board reset at 0.5 s, new boot at 0.6 s; the loop is held from
    # 0.05 to 1.55 s, so ACK, the new boot's announcement and the 0.3 s deadline all land in one turn.
    async with VendBoard(board.link, reply_timeout_s=0.3, vend_timeout_s=10.0) as driver:
        await driver.wait_connected(5.0)
        board.plan(Fault(ack_late_s=0.2, motor_ms=500, reboot_after_drop=0.1))
        seq = driver.last_seq + 1
        acked: list[int] = []

        async def on_ack(boot: int) -> None:
            acked.append(boot)

        stall_loop_after_first_vend(driver, 1.5)
        result = await driver.vend("A1", seq, on_ack=on_ack)
    stock, dropped, _ = board.snapshot()
    assert board.violations == []
    assert board.vend_copies[seq] == 1 and driver.counters["retries"] == 0
    assert len(acked) == 1 and result.outcome is VendOutcome.OK and dropped[seq] == 1 and stock["A1"] == 2


async def test_a_vend_is_not_resent_once_the_board_came_up_in_a_new_boot(board: AdversarialBoard) -> None:
    # The board resets on receiving the VEND, before any ACK, and announces its new boot 50 ms later;
    # a resend addressed to the old boot could only be refused (stale_boot): the driver stops and the
    # outcome is asked with VEND_RESULT, which says the board never took the seq.
    async with VendBoard(board.link, reply_timeout_s=0.3, vend_timeout_s=10.0) as driver:
        await driver.wait_connected(5.0)
        boot = driver.boot_id
        board.plan(Fault(reboot_before_ack=0.05))
        seq = driver.last_seq + 1
        with pytest.raises(BoardRebooted, match="not sent again"):
            await driver.vend("A1", seq)
        assert driver.boot_id != boot
        query = await driver.query_vend(seq)
    assert board.vend_copies[seq] == 1 and board.violations == []
    assert query.state == "unknown" and board.snapshot()[0]["A1"] == 3


async def test_an_ack_held_back_behind_line_noise_is_taken_and_a_new_boot_behind_it_stops_the_resend(
        board: AdversarialBoard) -> None:
    # Two stray bytes (SOF, length 120) reach the driver just before the ACK: its reader waits for a
    # 120-byte frame, and the ACK, then the new boot's announcement (the board resets half way through
    # the motor, deaf 0.3 s, up at ~0.45 s), sit inside it. At the 0.5 s deadline the partial is dropped
    # and both come out: the ACK answers the VEND (found by the stateful test: it was read after the
    # boot check with no waiter, thrown away, and the VEND sent again to the new boot).
    async with VendBoard(board.link, reply_timeout_s=0.5, vend_timeout_s=10.0) as driver:
        await driver.wait_connected(5.0)
        boot = driver.boot_id
        board.plan(Fault(ack_late_s=0.05, motor_ms=300, reboot_mid_motor=0.3))
        seq = driver.last_seq + 1
        acked: list[int] = []

        async def on_ack(ack_boot: int) -> None:
            acked.append(ack_boot)

        def sent(frame: object) -> None:
            if isinstance(frame, VendReq):
                board.line_noise(bytes([0xA6, 120]))

        driver.on_frame_sent = sent
        with pytest.raises(VendInterrupted):
            await driver.vend("A1", seq, on_ack=on_ack)
        assert driver.boot_id != boot
    assert board.violations == []
    assert board.vend_copies[seq] == 1 and driver.counters["retries"] == 0
    assert acked == [boot]  # journaled as ACKed by the boot that took it
    assert board.snapshot()[0]["A1"] == 3  # the motor stopped half way: nothing fell

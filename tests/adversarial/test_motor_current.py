"""The motor-current tail of VEND_DONE / VEND_RESULT_REPLY (docs/protocols/vend-board.md, "Motor
current"): the real driver against the board written from the doc, over its pty. A board that sends
the long form gives ``VendResult.current``; one that sends the short form gives None; a tail whose
peak is below its mean is dropped — and the vend itself stands in every case."""

from __future__ import annotations

import pathlib

import pytest

from drivers.vend_board import MotorCurrent, VendBoard, VendOutcome
from tests.adversarial.board import AdversarialBoard, Fault

pytestmark = pytest.mark.timeout(30)


async def sell_one(tmp_path: pathlib.Path, fault: Fault, *, report_current: bool = True):
    board = AdversarialBoard(str(tmp_path / "tty"), {"A1": 3}, memory=8, seed=5, report_current=report_current)
    board.start()
    try:
        async with VendBoard(board.link, reply_timeout_s=0.3, vend_timeout_s=5.0) as driver:
            await driver.wait_connected(5.0)
            board.plan(fault)
            seq = driver.last_seq + 1
            result = await driver.vend("A1", seq)
            query = await driver.query_vend(seq)
        return result, query, board.snapshot()
    finally:
        board.stop()


async def test_a_board_that_reports_current(tmp_path: pathlib.Path) -> None:
    result, query, (stock, dropped, _) = await sell_one(tmp_path, Fault(current=(310, 540)))
    assert result.outcome is VendOutcome.OK and stock["A1"] == 2 and sum(dropped.values()) == 1
    assert result.current == MotorCurrent(310, 540) == query.current


async def test_a_board_that_does_not_report_current(tmp_path: pathlib.Path) -> None:
    result, query, (stock, _, _) = await sell_one(tmp_path, Fault(current=(310, 540)), report_current=False)
    assert result.outcome is VendOutcome.OK and stock["A1"] == 2
    assert result.current is None and query.current is None and query.state == "done"


async def test_a_peak_below_the_mean_is_dropped_not_the_vend(tmp_path: pathlib.Path) -> None:
    result, query, (stock, _, _) = await sell_one(tmp_path, Fault(current=(600, 200)))
    assert result.outcome is VendOutcome.OK and stock["A1"] == 2
    assert result.current is None and query.current is None

"""The reconcile verdict table of docs/protocols/vend-board.md, row by row, and the count rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.core.vend_reconcile import JournalStep, Verdict, decide, settle_count

B, B2 = 0x1111, 0x2222
NOT_SENT = JournalStep(False, None, None)
SENT = JournalStep(True, B, None, 1024)  # sent to a boot that keeps 1024 outcomes across a reset
SENT_NO_MEMORY = JournalStep(True, B, None, 0)
ACKED = JournalStep(True, B, B, 1024)
V1 = JournalStep(True, None, None)  # an entry journaled before boot ids existed

TABLE = [
    (NOT_SENT, None, 0, 0, Verdict.NOT_SENT),
    (SENT, "done", B2, 0, Verdict.RECORD),
    (ACKED, "done", B, 1024, Verdict.RECORD),
    (ACKED, "in_progress", B, 1024, Verdict.WAIT),
    (SENT, "interrupted", B2, 1024, Verdict.NEEDS_COUNT),
    (ACKED, "interrupted", B2, 1024, Verdict.NEEDS_COUNT),
    (SENT, "unknown", B, 0, Verdict.NOT_SENT),
    (ACKED, "unknown", B, 1024, Verdict.NEEDS_COUNT),
    (SENT, "unknown", B2, 1024, Verdict.NEEDS_COUNT),  # unless it still knows an earlier vend: see below
    (SENT, "unknown", B2, 0, Verdict.NEEDS_COUNT),  # memory lost across the reset
    (SENT_NO_MEMORY, "unknown", B2, 1024, Verdict.NEEDS_COUNT),  # memory gained: the old boot kept nothing
    (SENT_NO_MEMORY, "unknown", B, 0, Verdict.NOT_SENT),
    (ACKED, "unknown", B2, 1024, Verdict.NEEDS_COUNT),
    (ACKED, "unknown", B2, 0, Verdict.NEEDS_COUNT),
    (V1, "unknown", B2, 1024, Verdict.NEEDS_COUNT),
    (V1, "done", B2, 1024, Verdict.RECORD),
]


@pytest.mark.parametrize(("step", "state", "boot", "memory", "verdict"), TABLE)
def test_each_row_of_the_documented_table(step, state, boot, memory, verdict) -> None:
    got, why = decide(step, state, boot, memory)
    assert got is verdict and why


@given(st.sampled_from(["unknown", "interrupted", "in_progress", "done"]), st.integers(1, 2**32 - 1),
       st.integers(0, 2000))
def test_an_acked_vend_is_never_refunded_unasked(state, boot, memory) -> None:
    """Once the board ACKed, the motor may have run: no answer other than 'done' may refund it."""
    verdict, _ = decide(ACKED, state, boot, memory)
    assert verdict is not Verdict.NOT_SENT


def test_an_unknown_board_state_is_refused() -> None:
    with pytest.raises(ValueError):
        decide(SENT, "exploded", B, 0)


@pytest.mark.parametrize(("ledger", "counted", "fell", "discrepancy"), [
    (5, 4, True, False), (5, 5, False, False), (5, 3, True, True), (5, 6, False, True), (1, 0, True, False),
])
def test_the_count_decides(ledger, counted, fell, discrepancy) -> None:
    v = settle_count(ledger, counted)
    assert (v.fell, v.discrepancy) == (fell, discrepancy)


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        settle_count(3, -1)


def test_unknown_from_a_board_with_memory_is_not_sent_only_if_its_memory_survived() -> None:
    """A board that keeps vends across resets answers 'unknown' from a later boot: the VEND never arrived
    only if its storage still holds an earlier ACKed vend. A boot with memory 0 in between (unseen while
    the daemon was down) wiped it, and the item may have fell - the adversarial stateful test found it:
    start(memory=1024), kill the daemon mid-sale, memory 0 at the next reset, reboot, memory 1024 again."""
    assert decide(SENT, "unknown", B2, 1024, anchor_kept=True)[0] is Verdict.NOT_SENT
    assert decide(SENT, "unknown", B2, 1024, anchor_kept=False)[0] is Verdict.NEEDS_COUNT
    assert decide(SENT_NO_MEMORY, "unknown", B2, 1024, anchor_kept=True)[0] is Verdict.NEEDS_COUNT
    assert decide(ACKED, "unknown", B2, 1024, anchor_kept=True)[0] is Verdict.NEEDS_COUNT

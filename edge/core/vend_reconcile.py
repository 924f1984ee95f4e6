"""What to do with a vend whose outcome the daemon did not see (pure; see docs/reliability.md).

Inputs are what the journal knows (was the VEND sent, and to which board boot id; was it ACKed) and
what the board answers to VEND_RESULT (its state, the boot id it answers from, and how many vend
outcomes it keeps across a reset). The rule that matters: never refund an item that may have
fallen, never charge for one that may not have — when the board cannot tell, a person counts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    RECORD = "record"  # the board knows the outcome: record it
    WAIT = "wait"  # the motor still runs: ask again later
    NOT_SENT = "not_sent"  # the board never ran this seq: fail the order, refund
    NEEDS_COUNT = "needs_count"  # nobody can tell whether the item fell: a technician counts


@dataclass(frozen=True)
class JournalStep:
    """How far the daemon got with one vend: was the VEND sent, to which boot id, the boot id of the ACK.

    ``sent`` with no ``sent_boot`` is an entry journaled by a protocol-v1 daemon (no boot ids).
    """

    sent: bool
    sent_boot: int | None
    acked_boot: int | None
    sent_memory: int | None = None  # outcomes the boot the VEND was sent to kept across a reset


def decide(step: JournalStep, board_state: str | None, board_boot: int, memory: int,
           anchor_kept: bool = False) -> tuple[Verdict, str]:
    """Verdict and a short reason for an open journal entry.

    ``board_state`` is the VEND_RESULT state ('unknown', 'in_progress', 'done', 'interrupted'), or
    None when the board was not asked (an entry that was never sent needs no question).
    ``anchor_kept``: the answering board still knows an earlier VEND that a board ACKed before this one
    was sent, so its memory was not wiped since (a boot with memory 0 in between, unseen while the
    daemon was down, forgets everything: its successor's 'unknown' then proves nothing).
    """
    if not step.sent:
        return Verdict.NOT_SENT, "the VEND frame was never written"
    if board_state == "done":
        return Verdict.RECORD, "the board reports the outcome"
    if board_state == "in_progress":
        return Verdict.WAIT, "the motor is still running"
    if board_state == "interrupted":
        return Verdict.NEEDS_COUNT, "the board was reset during this vend and cannot tell whether the item fell"
    if board_state != "unknown":
        raise ValueError(f"board state {board_state!r}")
    acked = step.acked_boot is not None
    if step.sent_boot is None:
        return Verdict.NEEDS_COUNT, "journaled before boot ids existed; the board does not know this vend"
    if board_boot == step.sent_boot:
        if acked:
            return Verdict.NEEDS_COUNT, "the board ACKed this vend and forgot it without a reset (board fault)"
        return Verdict.NOT_SENT, "the board, in the boot the VEND was sent to, never received it"
    if acked:
        return Verdict.NEEDS_COUNT, "the board ACKed this vend, then was reset and forgot it"
    if memory > 0 and (step.sent_memory or 0) > 0 and anchor_kept:
        # only a boot that took the VEND *with* memory recorded it before its motor ran, and only a
        # boot that still has that memory can read it back
        return Verdict.NOT_SENT, "the board keeps vends across resets, still knows an earlier one and never received this"
    return Verdict.NEEDS_COUNT, ("the board was reset after the VEND was sent, and the boot it was sent to or the "
                                 "one answering keeps no vends across resets")


@dataclass(frozen=True)
class CountVerdict:
    fell: bool  # the item left the spiral: the order is completed (captured), else failed (refunded)
    discrepancy: bool  # the count disagrees with the ledger by more than this one vend can explain


def settle_count(ledger_count: int, counted: int) -> CountVerdict:
    """A technician counted ``counted`` items in a slot the ledger says holds ``ledger_count``
    (the vend in question not subtracted). One fewer means the item fell; the same means it did not."""
    if counted < 0:
        raise ValueError("a count is 0 or more")
    fell = counted < ledger_count
    return CountVerdict(fell=fell, discrepancy=counted > ledger_count or ledger_count - counted > 1)

"""Writing what a vend did: order, stock and slot health in the caller's transaction.

Used by the sale itself (the board's answer) and by recovery (the board's memory, a technician's
count). Functions of a transaction, no service state: the same writes whoever learned the outcome.
"""

from __future__ import annotations

from typing import Any

import structlog

from drivers.vend_board import VendOutcome
from edge.ledger import journal, repo
from edge.ledger.db import Tx

log = structlog.get_logger("edge.services.vend")

# Outcomes that say the mechanism (not the stock count) is at fault: counted toward disabling the slot.
MECHANICAL = {VendOutcome.JAM, VendOutcome.MOTOR_OVERCURRENT, VendOutcome.DROP_NOT_DETECTED}
LOW_STOCK = 1


async def fail(tx: Tx, order_id: str, reason: str) -> dict[str, Any]:
    """No item reached the customer: the order fails, and a paid one is refunded."""
    return await repo.finish_order(tx, order_id, "failed", refund_due=await journal.order_total(tx, order_id) > 0,
                                   reason=reason)


async def record(tx: Tx, seq: int, outcome: VendOutcome, board_slot: str | None = None, *,
                 jam_disable_after: int) -> dict[str, Any]:
    """Write the outcome of journal entry `seq`: order, stock, slot health — one transaction.

    ``board_slot`` is the slot the board says turned; when it is not the slot asked for, stock
    moves on the slot that really turned, both slots are disabled and an alarm is raised.
    """
    j = await journal.get(tx, seq)
    assert j is not None, f"journal entry {seq} vanished"
    order_id, slot_id = j.order_id, j.slot_id
    turned = board_slot or slot_id
    known = turned == slot_id or await repo.stock_row(tx, turned) is not None
    await journal.mark_done(tx, seq, outcome.name.lower(), turned)
    if turned != slot_id:
        await _slot_mismatch(tx, order_id, seq, slot_id, turned, outcome)
    if not known:
        # a spiral this machine's planogram does not have: the drop sensor still decides the order,
        # but there is no ledger stock to move (the alarm asks for the wiring to be checked)
        if outcome is VendOutcome.OK:
            return await repo.finish_order(tx, order_id, "completed", reason=f"slot_mismatch:{turned}")
        return await fail(tx, order_id, outcome.name.lower())
    if outcome is VendOutcome.OK:
        left = await repo.change_stock(tx, turned, -1, "vend", order_id=order_id)
        await journal.reset_jam(tx, turned)
        if left <= LOW_STOCK:
            await repo.raise_alarm(tx, f"low_stock:{turned}", "low_stock", f"slot {turned} has {left} left",
                                   severity="info", data={"slot_id": turned, "count": left})
        order = await repo.finish_order(tx, order_id, "completed",
                                        reason="" if turned == slot_id else f"slot_mismatch:{turned}")
    else:
        await _slot_trouble(tx, turned, outcome, jam_disable_after)
        order = await fail(tx, order_id, outcome.name.lower())
    log.info("vend_finished", order_id=order_id, slot=slot_id, board_slot=turned, seq=seq,
             outcome=outcome.name.lower())
    return order


async def _slot_mismatch(tx: Tx, order_id: str, seq: int, asked: str, turned: str, outcome: VendOutcome) -> None:
    data = {"order_id": order_id, "seq": seq, "asked_slot": asked, "board_slot": turned,
            "outcome": outcome.name.lower()}
    await tx.event("vend_slot_mismatch", data, severity="critical")
    for slot in (asked, turned):
        if await repo.stock_row(tx, slot) is not None:
            await repo.set_slot_disabled(tx, slot, True, f"slot_mismatch {asked}->{turned}")
    await repo.raise_alarm(tx, f"slot_mismatch:{asked}", "slot_mismatch",
                           f"asked to vend {asked}, the board turned {turned} (order {order_id}): "
                           "check the wiring; both slots disabled", severity="critical", data=data)


async def _slot_trouble(tx: Tx, slot_id: str, outcome: VendOutcome, jam_disable_after: int) -> None:
    if outcome is VendOutcome.EMPTY:
        row = await repo.stock_row(tx, slot_id)
        if row and row.count:
            await repo.change_stock(tx, slot_id, -row.count, "board_reported_empty")
        return
    if outcome is VendOutcome.BAD_SLOT:
        await _disable(tx, slot_id, "bad_slot")
        return
    if outcome in MECHANICAL:
        await journal.bump_jam(tx, slot_id)
        row = await repo.stock_row(tx, slot_id)
        if row and row.jam_count >= jam_disable_after:
            await _disable(tx, slot_id, f"{outcome.name.lower()} x{row.jam_count}")


async def _disable(tx: Tx, slot_id: str, reason: str) -> None:
    if await repo.stock_row(tx, slot_id) is None:
        return
    await repo.set_slot_disabled(tx, slot_id, True, reason)
    await repo.raise_alarm(tx, f"slot_disabled:{slot_id}", "slot_disabled",
                           f"slot {slot_id} disabled: {reason}", data={"slot_id": slot_id, "reason": reason})


async def needs_count(tx: Tx, entry: journal.Entry, why: str) -> None:
    """Nobody can tell whether the item fell: hold the money, stop the slot, ask for a count."""
    await journal.mark_needs_count(tx, entry.seq)
    await repo.finish_order(tx, entry.order_id, "needs_count", reason=why)
    await repo.set_slot_disabled(tx, entry.slot_id, True, f"needs_count order {entry.order_id}")
    await repo.raise_alarm(tx, f"needs_count:{entry.order_id}", "needs_count",
                           f"slot {entry.slot_id}: count the items — order {entry.order_id} may or may not "
                           f"have dispensed ({why})", severity="critical",
                           data={"order_id": entry.order_id, "slot_id": entry.slot_id, "seq": entry.seq,
                                 "why": why})

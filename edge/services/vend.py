"""Classic select → pay → dispense, journaled before the frame leaves and reconciled after a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from drivers.errors import DeviceError
from drivers.vend_board import VendOutcome, VendQuery, VendRefused, VendResult
from drivers.vend_board.codec import VendReq
from edge.core.errors import LedgerError, SaleRefused
from edge.crashpoints import crash_point
from edge.ledger import repo
from edge.ledger.db import LedgerDB, Tx

log = structlog.get_logger(__name__)

# Outcomes that say the mechanism (not the stock count) is at fault: counted toward disabling the slot.
MECHANICAL = {VendOutcome.JAM, VendOutcome.MOTOR_OVERCURRENT, VendOutcome.DROP_NOT_DETECTED}
LOW_STOCK = 1

SaleGuard = Callable[[str, str], Awaitable[None]]  # (slot_id, sku_id) -> raises SaleRefused


class BoardPort(Protocol):
    connected: bool

    async def vend(self, slot: str, seq: int) -> VendResult: ...

    async def query_vend(self, seq: int) -> VendQuery: ...


class VendService:
    """Sells from spiral slots. Every vend is a journal row with the board sequence id it used."""

    def __init__(self, db: LedgerDB, board: BoardPort, *, jam_disable_after: int = 3,
                 guards: list[SaleGuard] | None = None) -> None:
        self.db = db
        self.board = board
        self.jam_disable_after = jam_disable_after
        self.guards = guards or []
        self._sale_lock = asyncio.Lock()  # one motor at a time, as the board demands
        self.unreconciled = 0
        if hasattr(board, "on_frame_sent"):  # a power cut right after the VEND frame left the port
            board.on_frame_sent = lambda frame: crash_point("vend.after_send") if isinstance(frame, VendReq) else None

    async def sell(self, slot_id: str, payment_ref: str = "", *, test: bool = False,
                   actor: str = "") -> dict[str, Any]:
        """Sell one item from a slot. Returns the order document; raises SaleRefused before any money moves."""
        async with self._sale_lock:
            order_id, seq = await self._journal(slot_id, payment_ref, test, actor)
            crash_point("vend.after_journal")
            try:
                result = await self.board.vend(slot_id, seq)
            except VendRefused as exc:
                if exc.reason != "bad_slot":  # busy/bad_frame: the motor did not start, but ask to be sure
                    return await self._mark_unknown(order_id, seq, exc)
                result = VendResult(seq, slot_id, VendOutcome.BAD_SLOT, 0)
            except DeviceError as exc:
                # timeout, unplug, garbage: we cannot know whether the motor ran — reconcile, never resend
                return await self._mark_unknown(order_id, seq, exc)
            crash_point("vend.before_result")
            try:
                async with self.db.tx() as tx:
                    return await self._record(tx, seq, result.outcome)
            except LedgerError:
                # the item may have fallen but its result cannot be written (disk full): the entry stays
                # open, sales stop until it is settled from the board once the ledger takes writes again
                self.unreconciled += 1
                raise

    async def _journal(self, slot_id: str, payment_ref: str, test: bool, actor: str) -> tuple[str, int]:
        if self.unreconciled:
            raise SaleRefused("reconciling", "an earlier vend's outcome is not known yet")
        if not self.board.connected:
            raise SaleRefused("board_offline", "the vend board is not connected")
        async with self.db.tx() as tx:
            row = await repo.stock_row(tx, slot_id)
            if row is None:
                raise SaleRefused("unknown_slot", slot_id)
            if row.disabled:
                raise SaleRefused("slot_disabled", row.disabled_reason or "")
            if row.count <= 0:
                raise SaleRefused("sold_out", slot_id)
            planogram = await repo.current_planogram(self.db)
            if planogram is None or slot_id not in planogram.slots or planogram.slots[slot_id].shelf is not None:
                raise SaleRefused("unknown_slot", f"{slot_id} is not a spiral slot")
            sku = planogram.sku_for_slot(slot_id)
            for guard in self.guards:
                await guard(slot_id, sku.sku_id)
            order_id = uuid.uuid4().hex[:16]
            price = 0 if test else sku.price.amount
            seq = await repo.next_board_seq(tx)
            await repo.insert_order(tx, order_id, kind="test_vend" if test else "vend", status="pending",
                                    total=price, currency=sku.price.currency, payment_ref=payment_ref,
                                    lines=[{"sku_id": sku.sku_id, "slot_id": slot_id, "qty": 1, "unit_price": price}])
            await tx.execute("INSERT INTO vend_journal(order_id, slot_id, board_seq, state, created_at, updated_at)"
                             " VALUES (?,?,?,?,?,?)", (order_id, slot_id, seq, "requested", tx.now, tx.now))
            await tx.event("vend_requested", {"order_id": order_id, "slot_id": slot_id, "seq": seq,
                                              "actor": actor}, sync=False)
        log.info("vend_requested", order_id=order_id, slot=slot_id, seq=seq)
        return order_id, seq

    async def _mark_unknown(self, order_id: str, seq: int, exc: DeviceError) -> dict[str, Any]:
        self.unreconciled += 1  # first: even if the ledger cannot take this write, no sale goes on
        async with self.db.tx() as tx:
            await tx.execute("UPDATE vend_journal SET state='unknown', updated_at=? WHERE board_seq=?", (tx.now, seq))
            await tx.event("vend_outcome_unknown", {"order_id": order_id, "seq": seq, "error": str(exc)},
                           severity="warning")
            doc = await repo.order_doc(tx, order_id)
        log.warning("vend_outcome_unknown", order_id=order_id, seq=seq, error=str(exc))
        return doc

    async def _record(self, tx: Tx, seq: int, outcome: VendOutcome) -> dict[str, Any]:
        """Write the outcome of journal entry `seq`: order, stock, slot health — one transaction."""
        j = await tx.fetchone("SELECT order_id, slot_id FROM vend_journal WHERE board_seq=?", (seq,))
        assert j is not None, f"journal entry {seq} vanished"
        order_id, slot_id = j["order_id"], j["slot_id"]
        await tx.execute("UPDATE vend_journal SET state='done', outcome=?, updated_at=? WHERE board_seq=?",
                         (outcome.name.lower(), tx.now, seq))
        if outcome is VendOutcome.OK:
            left = await repo.change_stock(tx, slot_id, -1, "vend", order_id=order_id)
            await tx.execute("UPDATE stock SET jam_count=0 WHERE slot_id=?", (slot_id,))
            if left <= LOW_STOCK:
                await repo.raise_alarm(tx, f"low_stock:{slot_id}", "low_stock", f"slot {slot_id} has {left} left",
                                       severity="info", data={"slot_id": slot_id, "count": left})
            order = await repo.finish_order(tx, order_id, "completed")
        else:
            await self._slot_trouble(tx, slot_id, outcome)
            paid = await tx.fetchone("SELECT total_amount FROM orders WHERE order_id=?", (order_id,))
            order = await repo.finish_order(tx, order_id, "failed", refund_due=bool(paid and paid[0] > 0),
                                            reason=outcome.name.lower())
        log.info("vend_finished", order_id=order_id, slot=slot_id, seq=seq, outcome=outcome.name.lower())
        return order

    async def _slot_trouble(self, tx: Tx, slot_id: str, outcome: VendOutcome) -> None:
        if outcome is VendOutcome.EMPTY:
            row = await repo.stock_row(tx, slot_id)
            if row and row.count:
                await repo.change_stock(tx, slot_id, -row.count, "board_reported_empty")
            return
        if outcome is VendOutcome.BAD_SLOT:
            await self._disable(tx, slot_id, "bad_slot")
            return
        if outcome in MECHANICAL:
            await tx.execute("UPDATE stock SET jam_count=jam_count+1 WHERE slot_id=?", (slot_id,))
            row = await repo.stock_row(tx, slot_id)
            if row and row.jam_count >= self.jam_disable_after:
                await self._disable(tx, slot_id, f"{outcome.name.lower()} x{row.jam_count}")

    async def _disable(self, tx: Tx, slot_id: str, reason: str) -> None:
        await repo.set_slot_disabled(tx, slot_id, True, reason)
        await repo.raise_alarm(tx, f"slot_disabled:{slot_id}", "slot_disabled",
                               f"slot {slot_id} disabled: {reason}", data={"slot_id": slot_id, "reason": reason})

    async def reconcile(self) -> int:
        """Settle every unfinished journal entry by asking the board; never re-send. Returns entries left."""
        rows = await self.db.fetchall("SELECT board_seq, order_id FROM vend_journal "
                                      "WHERE state IN ('requested','unknown') ORDER BY journal_id")
        left = 0
        for r in rows:
            try:
                q = await self.board.query_vend(r["board_seq"])
            except DeviceError as exc:
                log.warning("reconcile_deferred", seq=r["board_seq"], error=str(exc))
                left += 1
                continue
            left += await self._settle(r["board_seq"], r["order_id"], q)
        self.unreconciled = left
        return left

    async def _settle(self, seq: int, order_id: str, q: VendQuery) -> int:
        if q.state == "in_progress":
            return 1
        async with self.db.tx() as tx:
            if q.state == "done" and q.outcome is not None:
                await self._record(tx, seq, q.outcome)
            else:  # the board never saw this sequence id: nothing moved
                await tx.execute("UPDATE vend_journal SET state='done', outcome='not_sent', updated_at=? "
                                 "WHERE board_seq=?", (tx.now, seq))
                paid = await tx.fetchone("SELECT total_amount FROM orders WHERE order_id=?", (order_id,))
                await repo.finish_order(tx, order_id, "failed", refund_due=bool(paid and paid[0] > 0),
                                        reason="not_sent")
            await tx.event("vend_reconciled", {"order_id": order_id, "seq": seq, "board_state": q.state,
                                               "outcome": q.outcome.name.lower() if q.outcome else None})
        log.info("vend_reconciled", order_id=order_id, seq=seq, board_state=q.state)
        return 0

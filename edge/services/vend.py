"""Classic select → pay → dispense, journaled before every step and reconciled after a restart.

The journal (``edge/ledger/journal.py``) records each step before it happens: requested → sent (with
the board boot id) → acked → done, or unknown → reconciled, or needs_count → a technician's count.
Payment: the order is captured only when it completes (the drop sensor saw the item fall); a failed
order carries ``refund_due``; a ``needs_count`` order is neither captured nor refunded until counted.
Whether a sale may start is decided before its transaction by the pure checks of
``edge/core/sale_guard.py``; inside it only the stock row is checked again. Outcomes are written by
``vend_outcome``, unknown ones settled by ``vend_recovery``. See docs/reliability.md for every case.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from drivers.errors import DeviceError, ProtocolError
from drivers.vend_board import SlotMismatch, VendOutcome, VendQuery, VendRefused, VendResult
from drivers.vend_board.codec import VendReq
from edge.core.catalog import Sku
from edge.core.errors import LedgerError, SaleRefused
from edge.core.ports import PaymentPort
from edge.core.pricing import Priced
from edge.core.sale_guard import MachineState, SlotStock, check_machine, check_slot, check_stock
from edge.crashpoints import crash_point
from edge.ledger import journal, repo
from edge.ledger.db import LedgerDB, Tx
from edge.services import vend_outcome
from edge.services.pricing import PriceBook
from edge.services.vend_recovery import VendRecovery

log = structlog.get_logger(__name__)

SaleGuard = Callable[[str, str], Awaitable[None]]  # (slot_id, sku_id) -> raises SaleRefused


def _stock(row: repo.StockRow | None) -> SlotStock | None:
    return None if row is None else SlotStock(row.count, row.disabled, row.disabled_reason)


class BoardPort(Protocol):
    """What the vend flow needs of the vend board driver (drivers/vend_board satisfies it structurally)."""

    on_frame_sent: Callable[[Any], None] | None  # called with each frame right after it is written

    @property
    def connected(self) -> bool: ...  # link up and handshaken

    @property
    def memory(self) -> int: ...  # vend outcomes the board keeps across a reset (from its handshake)

    @property
    def last_seq(self) -> int: ...  # the highest VEND/DOOR_UNLOCK seq the board remembers (handshake)

    async def current_boot(self) -> int: ...

    async def vend(self, slot: str, seq: int, *, boot: int | None = None,
                   on_ack: Callable[[int], Awaitable[None]] | None = None) -> VendResult: ...

    async def query_vend(self, seq: int) -> VendQuery: ...


class VendService(VendRecovery):
    """Sells from spiral slots. Every vend is a journal row with the board sequence id it used."""

    def __init__(self, db: LedgerDB, board: BoardPort, *, jam_disable_after: int = 3,
                 guards: list[SaleGuard] | None = None, payment: PaymentPort | None = None) -> None:
        self.db = db
        self.board = board
        self.jam_disable_after = jam_disable_after
        self.guards = guards or []
        self.prices: PriceBook | None = None  # offline price rules (edge/services/pricing.py); None: list prices
        # told every board result (slot asked, result); must only queue, never raise (edge/services/maintenance.py)
        self.result_listeners: list[Callable[[str, VendResult], None]] = []
        self.payment = payment  # a card reader paid before the dispense (docs/protocols/mdb.md); None: as given
        self._sale_lock = asyncio.Lock()  # one motor at a time, as the board demands
        self._pay_lock = asyncio.Lock()  # one card payment at a time, authorize → settle
        self.unreconciled = 0
        self.accepting = True  # False while the daemon stops: new sales are refused
        self._exhausted: SaleRefused | None = None  # the seq range ran out in this sale's transaction
        # a power cut right after the VEND frame left the port (tests/reliability arms this crash point)
        board.on_frame_sent = lambda frame: crash_point("vend.after_send") if isinstance(frame, VendReq) else None

    async def note_board_seq(self) -> None:
        """After a handshake: move the ledger's seq counter past every seq the board remembers, so
        door unlocks (numbered from the same counter) never reuse one either."""
        last = self.board.last_seq
        if last:
            try:
                async with self.db.tx() as tx:
                    seq = await repo.next_board_seq(tx, at_least=last)
            except SaleRefused as exc:
                await self._seq_alarm(exc)
                return
            log.info("board_seq_checked", board_last_seq=last, ledger_seq=seq)

    async def _next_seq(self, tx: Tx) -> int:
        """The journal's next board seq, above every seq the board remembers (HELLO's last_seq)."""
        try:
            return await repo.next_board_seq(tx, at_least=self.board.last_seq + 1)
        except SaleRefused as exc:  # the sale is refused; the alarm is written after the rollback
            self._exhausted = exc
            raise

    async def board_incompatible(self, reason: str | None) -> None:
        """Raise (a reason) or clear (None) the alarm for a board that answers outside protocol v2."""
        async with self.db.tx() as tx:
            if reason:
                await repo.raise_alarm(tx, "board_incompatible", "board_incompatible",
                                       f"vend board refused: {reason}", severity="critical",
                                       data={"device": "vend_board", "reason": reason})
            else:
                await repo.clear_alarm(tx, "board_incompatible", "handshake ok")

    async def _seq_alarm(self, exc: SaleRefused) -> None:
        async with self.db.tx() as tx:
            await repo.raise_alarm(tx, "board_seq_exhausted", "board_seq_exhausted",
                                   f"sales refused: {exc.detail}", severity="critical",
                                   data={"board_last_seq": self.board.last_seq})
        log.error("board_seq_exhausted", board_last_seq=self.board.last_seq)

    async def drain(self) -> None:
        """Refuse new sales and wait for the one in progress to finish (daemon stop)."""
        self.accepting = False
        async with self._sale_lock:
            pass

    # ---- selling -----------------------------------------------------------------------------

    async def sell(self, slot_id: str, payment_ref: str = "", *, test: bool = False,
                   actor: str = "") -> dict[str, Any]:
        """Sell one item from a slot. Returns the order document; raises SaleRefused before any money moves.

        With a payment port (and not a test vend or a ``cash:`` sale) the card pays first: the approval is
        journaled before the vend, VEND SUCCESS follows only a confirmed drop, a failed one is refunded, an
        unknown one is settled by the port once the reconciler knows (docs/protocols/mdb.md)."""
        if self.payment is None or test or payment_ref.startswith("cash:"):
            order = await self._sell(slot_id, payment_ref, test=test, actor=actor)
            if self.payment is not None and payment_ref.startswith("cash:") and order["status"] == "completed":
                await self.payment.report_cash_sale(slot_id, order["total"], order["currency"])
            return order
        async with self._pay_lock:
            sku, priced = await self._check(slot_id)  # refuse before the customer is asked to pay
            amount = sku.price.amount if priced is None else priced.unit_price
            auth = await self.payment.authorize(slot_id, amount, sku.price.currency)
            try:
                order = await self._sell(slot_id, auth.ref, actor=actor, priced=priced)
            except SaleRefused:
                await self.payment.settle(auth, False)  # refused after the approval: nothing turned
                raise
            except Exception:
                await self.payment.settle(auth, None)  # left to the port's recovery, from the ledger
                raise
            await self.payment.settle(auth, {"completed": True, "failed": False}.get(order["status"]))
            return order

    async def _check(self, slot_id: str) -> tuple[Sku, Priced | None]:
        """What ``_journal`` checks and the price it will charge (the quote is taken here and passed on)."""
        sku = await self._sellable(slot_id)
        return sku, None if self.prices is None else await self.prices.for_sale(self.db, slot_id, sku)

    async def _sell(self, slot_id: str, payment_ref: str, *, test: bool = False, actor: str = "",
                    priced: Priced | None = None) -> dict[str, Any]:
        async with self._sale_lock:
            order_id, seq, boot = await self._journal(slot_id, payment_ref, test, actor, priced)
            crash_point("vend.after_journal")
            try:
                result = await self.board.vend(slot_id, seq, boot=boot, on_ack=lambda b: self._acked(seq, b))
            except SlotMismatch as exc:  # the board says another slot turned: record what really happened
                result = exc.result
            except VendRefused as exc:
                if not exc.definitive:  # a NAK that may answer an older copy: ask the board
                    return await self._mark_unknown(order_id, seq, exc)
                if exc.reason == "bad_slot":
                    result = VendResult(seq, slot_id, VendOutcome.BAD_SLOT, 0)
                else:
                    return await self._record_not_run(order_id, seq, exc.reason, str(exc))
            except DeviceError as exc:
                # timeout, unplug, reboot, protocol breach: whether the motor ran is not known — reconcile
                return await self._mark_unknown(order_id, seq, exc)
            except LedgerError:
                self.unreconciled += 1  # the ACK could not be journaled: settle from the board later
                raise
            for listener in self.result_listeners:
                listener(slot_id, result)
            crash_point("vend.before_result")
            try:
                async with self.db.tx() as tx:
                    return await vend_outcome.record(tx, seq, result.outcome, result.slot,
                                                     jam_disable_after=self.jam_disable_after)
            except LedgerError:
                # the item may have fallen but its result cannot be written (disk full): the entry stays
                # open, sales stop until it is settled from the board once the ledger takes writes again
                self.unreconciled += 1
                raise

    async def _journal(self, slot_id: str, payment_ref: str, test: bool, actor: str,
                       priced: Priced | None = None) -> tuple[str, int, int]:
        """Write the order and its journal row as ``sent`` to the board's current boot id, in one
        transaction: committing it is the last step before the VEND frame is written (a crash after
        the commit is settled by asking the board, which then answers 'unknown' from that boot)."""
        refusal = check_machine(MachineState(self.accepting, self.unreconciled, self.board.connected))
        if refusal is not None:
            raise refusal.error()
        try:
            boot = await self.board.current_boot()  # re-handshakes if the board was reset since HELLO
        except ProtocolError as exc:  # it answers, but outside the protocol: say so now, not at the next poll
            await self.board_incompatible(str(exc))
            raise SaleRefused("board_offline", f"the vend board breaks the protocol: {exc}") from exc
        except DeviceError as exc:
            raise SaleRefused("board_offline", f"the vend board does not answer: {exc}") from exc
        sku = await self._sellable(slot_id)
        if priced is None and not test and self.prices is not None:
            priced = await self.prices.for_sale(self.db, slot_id, sku)
        self._exhausted = None
        try:
            return await self._write_sale(slot_id, sku, payment_ref, test, actor, boot, priced)
        finally:
            if self._exhausted is not None:
                await self._seq_alarm(self._exhausted)

    async def _write_sale(self, slot_id: str, sku: Sku, payment_ref: str, test: bool, actor: str, boot: int,
                          priced: Priced | None) -> tuple[str, int, int]:
        async with self.db.tx() as tx:
            # checked before the transaction; only the stock row can have changed since (a restock, a count)
            refusal = check_stock(slot_id, _stock(await repo.stock_row(tx, slot_id)))
            if refusal is not None:
                raise refusal.error()
            order_id = uuid.uuid4().hex[:16]
            price = 0 if test else sku.price.amount if priced is None else priced.unit_price
            seq = await self._next_seq(tx)
            await repo.insert_order(tx, order_id, kind="test_vend" if test else "vend", status="pending",
                                    total=price, currency=sku.price.currency, payment_ref=payment_ref,
                                    lines=[{"sku_id": sku.sku_id, "slot_id": slot_id, "qty": 1, "unit_price": price,
                                           "price_rule": "" if priced is None else priced.rule_id}])
            await journal.insert(tx, order_id, slot_id, seq, boot, self.board.memory)
            await tx.event("vend_requested", {"order_id": order_id, "slot_id": slot_id, "seq": seq, "boot": boot,
                                              "actor": actor}, sync=False)
        log.info("vend_requested", order_id=order_id, slot=slot_id, seq=seq, boot=boot)
        return order_id, seq, boot

    async def _sellable(self, slot_id: str) -> Sku:
        """The slot's checks (``check_slot``) on a snapshot read outside any transaction, then the plant's
        guards (food safety, mains); the first refusal is raised. Returns the SKU the planogram puts there."""
        row = await repo.stock_row(self.db, slot_id)
        planogram = await repo.current_planogram(self.db)
        slot = planogram.slots.get(slot_id) if planogram is not None else None
        refusal = check_slot(slot_id, _stock(row), slot is not None and slot.shelf is None)
        if refusal is not None:
            raise refusal.error()
        assert planogram is not None
        sku = planogram.sku_for_slot(slot_id)
        for guard in self.guards:
            await guard(slot_id, sku.sku_id)
        return sku

    async def _acked(self, seq: int, boot: int) -> None:
        async with self.db.tx() as tx:
            await journal.mark_acked(tx, seq, boot)

    async def _mark_unknown(self, order_id: str, seq: int, exc: DeviceError) -> dict[str, Any]:
        self.unreconciled += 1  # first: even if the ledger cannot take this write, no sale goes on
        protocol = isinstance(exc, ProtocolError)
        async with self.db.tx() as tx:
            await journal.mark_unknown(tx, seq)
            await tx.event("vend_outcome_unknown", {"order_id": order_id, "seq": seq, "error": str(exc),
                                                    "kind": type(exc).__name__}, severity="warning")
            if protocol:  # the board said something outside the protocol: a person should look
                await repo.raise_alarm(tx, "vend_board_protocol", "vend_board_protocol",
                                       f"vend board broke the protocol: {exc}", severity="critical",
                                       data={"order_id": order_id, "seq": seq, "error": str(exc)})
            doc = await repo.order_doc(tx, order_id)
        log.warning("vend_outcome_unknown", order_id=order_id, seq=seq, error=str(exc), protocol=protocol)
        return doc

    async def _record_not_run(self, order_id: str, seq: int, reason: str, detail: str) -> dict[str, Any]:
        """The board certainly did not run this seq: the order fails, a paid one is refunded."""
        async with self.db.tx() as tx:
            await journal.mark_done(tx, seq, "not_sent")
            order = await vend_outcome.fail(tx, order_id, reason)
        log.warning("vend_not_run", order_id=order_id, seq=seq, reason=reason, detail=detail)
        return order

"""Classic select → pay → dispense, journaled before every step and reconciled after a restart.

The journal (``edge/ledger/journal.py``) records each step before it happens: requested → sent (with
the board boot id) → acked → done, or unknown → reconciled, or needs_count → a technician's count.
Payment: the order is captured only when it completes (the drop sensor saw the item fall); a failed
order carries ``refund_due``; a ``needs_count`` order is neither captured nor refunded until counted.
See docs/reliability.md for every case and its test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from drivers.backoff import Backoff
from drivers.errors import DeviceError, ProtocolError
from drivers.vend_board import SlotMismatch, VendOutcome, VendQuery, VendRefused, VendResult
from drivers.vend_board.codec import VendReq
from edge.core.catalog import Sku
from edge.core.errors import LedgerError, SaleRefused
from edge.core.ports import PaymentPort
from edge.core.pricing import Priced
from edge.core.vend_reconcile import JournalStep, Verdict, decide, settle_count
from edge.crashpoints import crash_point
from edge.ledger import journal, repo
from edge.ledger.db import LedgerDB, Tx
from edge.services.pricing import PriceBook

log = structlog.get_logger(__name__)

# Outcomes that say the mechanism (not the stock count) is at fault: counted toward disabling the slot.
MECHANICAL = {VendOutcome.JAM, VendOutcome.MOTOR_OVERCURRENT, VendOutcome.DROP_NOT_DETECTED}
LOW_STOCK = 1
RECONCILE_PERIOD_S = 0.5
RECONCILE_BACKOFF_MAX_S = 30.0

SaleGuard = Callable[[str, str], Awaitable[None]]  # (slot_id, sku_id) -> raises SaleRefused


async def _fail(tx: Tx, order_id: str, reason: str) -> dict[str, Any]:
    """No item reached the customer: the order fails, and a paid one is refunded."""
    return await repo.finish_order(tx, order_id, "failed", refund_due=await journal.order_total(tx, order_id) > 0,
                                   reason=reason)


class BoardPort(Protocol):
    connected: bool
    on_frame_sent: Callable[[Any], None] | None  # called with each frame right after it is written

    @property
    def memory(self) -> int: ...  # vend outcomes the board keeps across a reset (from its handshake)

    @property
    def last_seq(self) -> int: ...  # the highest VEND/DOOR_UNLOCK seq the board remembers (handshake)

    async def current_boot(self) -> int: ...

    async def vend(self, slot: str, seq: int, *, boot: int | None = None,
                   on_ack: Callable[[int], Awaitable[None]] | None = None) -> VendResult: ...

    async def query_vend(self, seq: int) -> VendQuery: ...


class VendService:
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

    async def load(self) -> None:
        """Count the journal entries a previous run left open: sales wait until they are settled."""
        self.unreconciled = await journal.count_open(self.db)

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
        async with self.db.tx() as tx:
            sku = await self._sellable(tx, slot_id)
            return sku, None if self.prices is None else await self.prices.for_sale(tx, slot_id, sku)

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
                    return await self._record(tx, seq, result.outcome, result.slot)
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
        if not self.accepting:
            raise SaleRefused("stopping", "the machine is shutting down")
        if self.unreconciled:
            raise SaleRefused("reconciling", "an earlier vend's outcome is not known yet")
        if not self.board.connected:
            raise SaleRefused("board_offline", "the vend board is not connected")
        try:
            boot = await self.board.current_boot()  # re-handshakes if the board was reset since HELLO
        except ProtocolError as exc:  # it answers, but outside the protocol: say so now, not at the next poll
            await self.board_incompatible(str(exc))
            raise SaleRefused("board_offline", f"the vend board breaks the protocol: {exc}") from exc
        except DeviceError as exc:
            raise SaleRefused("board_offline", f"the vend board does not answer: {exc}") from exc
        self._exhausted = None
        try:
            return await self._write_sale(slot_id, payment_ref, test, actor, boot, priced)
        finally:
            if self._exhausted is not None:
                await self._seq_alarm(self._exhausted)

    async def _write_sale(self, slot_id: str, payment_ref: str, test: bool, actor: str, boot: int,
                          priced: Priced | None) -> tuple[str, int, int]:
        async with self.db.tx() as tx:
            sku = await self._sellable(tx, slot_id)
            order_id = uuid.uuid4().hex[:16]
            if priced is None and not test and self.prices is not None:
                priced = await self.prices.for_sale(tx, slot_id, sku)
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

    async def _sellable(self, tx: Tx, slot_id: str) -> Sku:
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
            order = await _fail(tx, order_id, reason)
        log.warning("vend_not_run", order_id=order_id, seq=seq, reason=reason, detail=detail)
        return order

    async def _record(self, tx: Tx, seq: int, outcome: VendOutcome, board_slot: str | None = None) -> dict[str, Any]:
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
            await self._slot_mismatch(tx, order_id, seq, slot_id, turned, outcome)
        if not known:
            # a spiral this machine's planogram does not have: the drop sensor still decides the order,
            # but there is no ledger stock to move (the alarm asks for the wiring to be checked)
            if outcome is VendOutcome.OK:
                return await repo.finish_order(tx, order_id, "completed", reason=f"slot_mismatch:{turned}")
            return await _fail(tx, order_id, outcome.name.lower())
        if outcome is VendOutcome.OK:
            left = await repo.change_stock(tx, turned, -1, "vend", order_id=order_id)
            await journal.reset_jam(tx, turned)
            if left <= LOW_STOCK:
                await repo.raise_alarm(tx, f"low_stock:{turned}", "low_stock", f"slot {turned} has {left} left",
                                       severity="info", data={"slot_id": turned, "count": left})
            order = await repo.finish_order(tx, order_id, "completed",
                                            reason="" if turned == slot_id else f"slot_mismatch:{turned}")
        else:
            await self._slot_trouble(tx, turned, outcome)
            order = await _fail(tx, order_id, outcome.name.lower())
        log.info("vend_finished", order_id=order_id, slot=slot_id, board_slot=turned, seq=seq,
                 outcome=outcome.name.lower())
        return order

    async def _slot_mismatch(self, tx: Tx, order_id: str, seq: int, asked: str, turned: str,
                             outcome: VendOutcome) -> None:
        data = {"order_id": order_id, "seq": seq, "asked_slot": asked, "board_slot": turned,
                "outcome": outcome.name.lower()}
        await tx.event("vend_slot_mismatch", data, severity="critical")
        for slot in (asked, turned):
            if await repo.stock_row(tx, slot) is not None:
                await repo.set_slot_disabled(tx, slot, True, f"slot_mismatch {asked}->{turned}")
        await repo.raise_alarm(tx, f"slot_mismatch:{asked}", "slot_mismatch",
                               f"asked to vend {asked}, the board turned {turned} (order {order_id}): "
                               "check the wiring; both slots disabled", severity="critical", data=data)

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
            await journal.bump_jam(tx, slot_id)
            row = await repo.stock_row(tx, slot_id)
            if row and row.jam_count >= self.jam_disable_after:
                await self._disable(tx, slot_id, f"{outcome.name.lower()} x{row.jam_count}")

    async def _disable(self, tx: Tx, slot_id: str, reason: str) -> None:
        if await repo.stock_row(tx, slot_id) is None:
            return
        await repo.set_slot_disabled(tx, slot_id, True, reason)
        await repo.raise_alarm(tx, f"slot_disabled:{slot_id}", "slot_disabled",
                               f"slot {slot_id} disabled: {reason}", data={"slot_id": slot_id, "reason": reason})

    # ---- reconciliation ----------------------------------------------------------------------

    async def reconcile(self) -> int:
        """Settle every open journal entry by asking the board; never re-send. Returns entries left.

        Raises DeviceError (a ProtocolError included) when the board cannot be asked or answers
        outside the protocol: the entry stays open and the caller retries later.
        """
        left = 0
        entries = await journal.open_entries(self.db)
        if any(e.state != "requested" for e in entries):
            try:  # a board reset since the handshake: learn its memory again before trusting 'unknown'
                await self.board.current_boot()
            except DeviceError:
                self.unreconciled = max(self.unreconciled, len(entries))
                raise
        for entry in entries:
            step = JournalStep(entry.state != "requested", entry.sent_boot, entry.acked_boot, entry.sent_memory)
            if not step.sent:
                verdict, why = decide(step, None, 0, 0)
                q = None
            else:
                try:
                    q = await self.board.query_vend(entry.seq)
                except DeviceError:
                    self.unreconciled = left + 1
                    raise
                verdict, why = decide(step, q.state, q.boot, q.memory)
            if verdict is Verdict.WAIT:
                left += 1
                continue
            await self._settle(entry, verdict, why, q)
        self.unreconciled = left
        return left

    async def _settle(self, entry: journal.Entry, verdict: Verdict, why: str, q: VendQuery | None) -> None:
        async with self.db.tx() as tx:
            now = await journal.get(tx, entry.seq)
            if now is None or now.state not in journal.OPEN_STATES:
                return  # settled meanwhile (a technician's count): never record twice
            if verdict is Verdict.RECORD:
                assert q is not None and q.outcome is not None
                await self._record(tx, entry.seq, q.outcome, q.slot)
            elif verdict is Verdict.NOT_SENT:
                await journal.mark_done(tx, entry.seq, "not_sent")
                await _fail(tx, entry.order_id, "not_sent")
            else:
                await self._needs_count(tx, entry, why)
            await tx.event("vend_reconciled", {"order_id": entry.order_id, "seq": entry.seq,
                                               "board_state": q.state if q else None,
                                               "board_boot": q.boot if q else None, "verdict": verdict.value,
                                               "why": why,
                                               "outcome": q.outcome.name.lower() if q and q.outcome else None})
        log.info("vend_reconciled", order_id=entry.order_id, seq=entry.seq, verdict=verdict.value, why=why)

    async def _needs_count(self, tx: Tx, entry: journal.Entry, why: str) -> None:
        """Nobody can tell whether the item fell: hold the money, stop the slot, ask for a count."""
        await journal.mark_needs_count(tx, entry.seq)
        await repo.finish_order(tx, entry.order_id, "needs_count", reason=why)
        await repo.set_slot_disabled(tx, entry.slot_id, True, f"needs_count order {entry.order_id}")
        await repo.raise_alarm(tx, f"needs_count:{entry.order_id}", "needs_count",
                               f"slot {entry.slot_id}: count the items — order {entry.order_id} may or may not "
                               f"have dispensed ({why})", severity="critical",
                               data={"order_id": entry.order_id, "slot_id": entry.slot_id, "seq": entry.seq,
                                     "why": why})

    async def run_reconciler(self, board_ready: Callable[[], bool]) -> None:
        """Settle open entries whenever the board is reachable; back off (and raise one alarm) while the
        board cannot be asked or answers outside the protocol — never a crash loop."""
        backoff = Backoff(RECONCILE_PERIOD_S, RECONCILE_BACKOFF_MAX_S)
        while True:
            if not (self.unreconciled and board_ready()):
                await asyncio.sleep(RECONCILE_PERIOD_S)
                continue
            try:
                left = await self.reconcile()
            except DeviceError as exc:
                delay = backoff.next()
                log.warning("reconcile_deferred", error=str(exc), retry_s=round(delay, 2))
                await self._reconcile_alarm(exc)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await self._reconcile_alarm(None)
            if not left:
                log.info("reconcile_complete")
            await asyncio.sleep(RECONCILE_PERIOD_S)

    async def _reconcile_alarm(self, exc: DeviceError | None) -> None:
        async with self.db.tx() as tx:
            if exc is None:
                await repo.clear_alarm(tx, "vend_reconcile_blocked", "reconciled")
                return
            await repo.raise_alarm(tx, "vend_reconcile_blocked", "vend_reconcile_blocked",
                                   f"open vends cannot be settled from the board: {exc}", severity="critical",
                                   data={"error": str(exc), "kind": type(exc).__name__})

    # ---- a technician's count ----------------------------------------------------------------

    async def settle_by_count(self, order_id: str, counted: int, *, actor: str) -> dict[str, Any]:
        """Settle a ``needs_count`` (or a stuck unknown) vend with the items the technician counted in
        the slot: one fewer than the ledger says → the item fell (order completed), otherwise it did
        not (order failed, refund due). Audited and synced; the slot is enabled again."""
        if isinstance(counted, bool) or not isinstance(counted, int) or counted < 0:
            raise SaleRefused("bad_count", "count the items in the slot: 0 or more")
        async with self._sale_lock, self.db.tx() as tx:
            entry = await journal.by_order(tx, order_id)
            if entry is None or entry.state not in ("needs_count", "unknown"):
                raise SaleRefused("not_needs_count", f"order {order_id} has no vend waiting for a count")
            row = await repo.stock_row(tx, entry.slot_id)
            if row is None:
                raise SaleRefused("unknown_slot", entry.slot_id)
            if counted > row.capacity:
                raise SaleRefused("bad_count", f"{entry.slot_id} holds at most {row.capacity}")
            verdict = settle_count(row.count, counted)
            outcome = "ok" if verdict.fell else "counted_not_dispensed"
            await journal.mark_counted(tx, entry.seq, outcome, counted, actor)
            if counted != row.count:
                await repo.change_stock(tx, entry.slot_id, counted - row.count,
                                        "vend" if verdict.fell else "count", order_id=order_id, actor=actor)
            if verdict.fell:
                order = await repo.finish_order(tx, order_id, "completed", reason="counted")
            else:
                order = await _fail(tx, order_id, "counted_not_dispensed")
            data = {"order_id": order_id, "slot_id": entry.slot_id, "ledger_count": row.count, "counted": counted,
                    "fell": verdict.fell, "actor": actor}
            await tx.event("vend_counted", data, severity="warning" if verdict.discrepancy else "info")
            if verdict.discrepancy:
                await tx.event("stock_discrepancy", data, severity="warning")
            await repo.clear_alarm(tx, f"needs_count:{order_id}", f"counted by {actor}")
            if not await journal.needs_count(tx, entry.slot_id):
                await repo.set_slot_disabled(tx, entry.slot_id, False, None)
            was_open = entry.state == "unknown"
        if was_open:
            await self.load()
        log.info("vend_counted", order_id=order_id, counted=counted, fell=verdict.fell, actor=actor)
        return order

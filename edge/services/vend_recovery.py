"""Settling vends whose outcome is not known: by asking the board (never by re-sending) or by a
technician's count. Part of ``VendService`` (edge/services/vend.py), kept apart as its own concern."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from drivers.backoff import Backoff
from drivers.errors import DeviceError
from drivers.vend_board import VendQuery
from edge.core.errors import SaleRefused
from edge.core.vend_reconcile import JournalStep, Verdict, decide, settle_count
from edge.ledger import journal, repo
from edge.ledger.db import LedgerDB
from edge.services import vend_outcome

if TYPE_CHECKING:
    from edge.services.vend import BoardPort

log = structlog.get_logger("edge.services.vend")

RECONCILE_PERIOD_S = 0.5
RECONCILE_BACKOFF_MAX_S = 30.0


class VendRecovery:
    """The reconciler and the count settlement; ``VendService`` supplies the state below."""

    db: LedgerDB
    board: BoardPort
    jam_disable_after: int
    unreconciled: int
    _sale_lock: asyncio.Lock

    async def load(self) -> None:
        """Count the journal entries a previous run left open: sales wait until they are settled."""
        self.unreconciled = await journal.count_open(self.db)

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
                anchor = await self._anchor_kept(entry.seq, q) if q.state == "unknown" else False
                verdict, why = decide(step, q.state, q.boot, q.memory, anchor)
            if verdict is Verdict.WAIT:
                left += 1
                continue
            await self._settle(entry, verdict, why, q)
        self.unreconciled = left
        return left

    async def _anchor_kept(self, seq: int, q: VendQuery) -> bool:
        """Whether the board answering `q` still remembers the newest earlier ACKed VEND (see decide)."""
        if q.memory <= 0 or q.boot == 0:
            return False
        anchor = await journal.acked_before(self.db, seq)
        if anchor is None:
            return False
        a = await self.board.query_vend(anchor.seq)
        return a.boot == q.boot and a.state in ("done", "interrupted", "in_progress")

    async def _settle(self, entry: journal.Entry, verdict: Verdict, why: str, q: VendQuery | None) -> None:
        async with self.db.tx() as tx:
            now = await journal.get(tx, entry.seq)
            if now is None or now.state not in journal.OPEN_STATES:
                return  # settled meanwhile (a technician's count): never record twice
            if verdict is Verdict.RECORD:
                assert q is not None and q.outcome is not None
                await vend_outcome.record(tx, entry.seq, q.outcome, q.slot, jam_disable_after=self.jam_disable_after)
            elif verdict is Verdict.NOT_SENT:
                await journal.mark_done(tx, entry.seq, "not_sent")
                await vend_outcome.fail(tx, entry.order_id, "not_sent")
            else:
                await vend_outcome.needs_count(tx, entry, why)
            await tx.event("vend_reconciled", {"order_id": entry.order_id, "seq": entry.seq,
                                               "board_state": q.state if q else None,
                                               "board_boot": q.boot if q else None, "verdict": verdict.value,
                                               "why": why,
                                               "outcome": q.outcome.name.lower() if q and q.outcome else None})
        log.info("vend_reconciled", order_id=entry.order_id, seq=entry.seq, verdict=verdict.value, why=why)

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
                order = await vend_outcome.fail(tx, order_id, "counted_not_dispensed")
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

"""Card payment through an MDB cashless reader, journal-first (implements ``PaymentPort``).

Two rules, kept by the order of ledger writes and bus commands (docs/protocols/mdb.md):
- never a drop without an approval recorded first: ``authorize`` returns only after the reader's
  VEND APPROVED is committed as ``approved``;
- never a captured payment without a confirmed drop: VEND SUCCESS leaves only when the vend flow
  says the drop sensor saw the item fall (or, after a restart, the order is ``completed``).
Every bus step that moves money is preceded by the state saying what is about to happen, so a
restart (``recover``) knows what to finish: ``requested`` → cancel, ``approved`` → by the vend's
outcome, ``capturing`` → VEND SUCCESS again, ``refunding`` → VEND FAILURE again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import structlog

from drivers.errors import DeviceError, DeviceTimeout
from drivers.mdb import CashlessReader, ReaderState
from edge.config import PaymentConfig
from edge.core.errors import SaleRefused
from edge.core.ports import Authorization
from edge.ledger import payments, repo
from edge.ledger.db import LedgerDB
from edge.services.payment_mdb_steps import (
    ALARM_OFFLINE,
    IN_SESSION,
    METHOD,
    OFFLINE_ALARM_S,
    MdbPaymentConfig,
    MdbSteps,
    mdb_item,
)

__all__ = ["ALARM_OFFLINE", "IN_SESSION", "METHOD", "OFFLINE_ALARM_S", "MdbPayment", "MdbPaymentConfig",
           "mdb_item", "start_mdb_payment"]

log = structlog.get_logger(__name__)


class MdbPayment(MdbSteps):
    """The payment port over one ``CashlessReader``; the ledger is the source of truth. The journaled bus
    steps and the service's state are ``MdbSteps`` (payment_mdb_steps.py)."""

    # ---- PaymentPort -------------------------------------------------------------------------

    async def authorize(self, slot_id: str, amount: int, currency: str) -> Authorization:
        if await self._leftovers():
            if await self.recover():  # e.g. a vend whose outcome the reconciler has just settled
                raise SaleRefused("payment_reconciling", "an earlier card payment is not settled yet")
        await self._ensure_ready()
        item, scaled = self._wire_values(slot_id, amount, currency)
        if not self.reader.always_idle:
            try:
                await self.reader.wait_session(self.config.card_wait_s)
            except DeviceTimeout as exc:
                raise SaleRefused("no_card", "no card presented in time") from exc
            except DeviceError as exc:
                raise SaleRefused("reader_offline", str(exc)) from exc
        payment_id = uuid.uuid4().hex[:16]
        async with self.db.tx() as tx:
            await payments.open_payment(
                tx,
                payment_id,
                method=METHOD,
                slot_id=slot_id,
                item=item,
                amount=amount,
                currency=currency,
                scaled=scaled,
            )
        self._resets_at[payment_id] = self.reader.counters["resets_seen"]
        self._live.add(payment_id)  # this sale settles it; ``recover`` keeps off until it is handed over
        try:
            decision = await self._ask(payment_id, scaled, item)
            if not decision.approved:
                await self._close(payment_id, "denied")
                await self._complete_session()
                raise SaleRefused("payment_denied", "the card reader declined")
            async with self.db.tx() as tx:  # recorded before the caller may start a motor
                await payments.set_payment_state(tx, payment_id, "approved")
        except BaseException:
            self._live.discard(payment_id)
            raise
        log.info("payment_approved", payment_id=payment_id, slot=slot_id, amount=amount)
        return Authorization(payment_id, METHOD, amount, currency)

    async def settle(self, auth: Authorization, dispensed: bool | None) -> str:
        async with self._settling:  # never beside ``recover``: one VEND SUCCESS/FAILURE per payment
            try:
                return await self._settle(auth, dispensed)
            finally:
                self._live.discard(auth.payment_id)  # from now on ``recover`` may finish what is left

    async def _settle(self, auth: Authorization, dispensed: bool | None) -> str:
        row = await payments.payment(self.db, auth.payment_id)
        if row is None or row.state not in ("approved", "capturing", "refunding"):
            raise ValueError(f"payment {auth.payment_id} is not awaiting settlement ({row and row.state})")
        resets_at = self._resets_at.pop(auth.payment_id, None)
        if dispensed is None:
            # the vend journal does not know yet: ``recover`` (run by the supervised loop) settles it from the
            # order once the reconciler has; needs_count is refunded there (no capture without a drop)
            log.info("payment_settle_deferred", payment_id=auth.payment_id)
            return row.state
        state = await self._finish(row, dispensed, "", resets_at)
        await self._complete_session()
        await self.watch()
        return state

    async def report_cash_sale(self, slot_id: str, amount: int, currency: str) -> None:
        try:
            item, scaled = self._wire_values(slot_id, amount, currency)
            await self.reader.cash_sale(scaled, item)
        except (DeviceError, SaleRefused) as exc:  # the reader's audit misses one cash sale; ours has it
            log.warning("mdb_cash_sale_not_reported", slot=slot_id, error=str(exc))
            return
        async with self.db.tx() as tx:
            await tx.event(
                "cash_sale_reported",
                {"slot_id": slot_id, "amount": amount, "currency": currency, "method": METHOD},
                sync=False,
            )

    async def recover(self) -> int:
        """Close what a restart, a bus failure or an unsettled vend left open; returns payments left.

        Runs before the reader is reset (a reset would void what we still have to capture), then sets
        the reader up if it is not ready."""
        async with self._settling:
            return await self._recover()

    async def _recover(self) -> int:
        left = settled = 0
        try:
            await self.reader.poll_now()  # collect a JUST RESET or a late approval first
        except DeviceError as exc:
            log.warning("payment_recover_deferred", error=str(exc))
            open_ = await payments.open_payments(self.db, METHOD)
            self.unsettled = sum(1 for p in open_ if p.payment_id not in self._live)
            return self.unsettled
        for row in await payments.open_payments(self.db, METHOD):
            if row.payment_id in self._live:
                continue
            try:
                waiting = await self._recover_one(row)
            except DeviceError as exc:
                log.warning("payment_recover_failed", payment_id=row.payment_id, error=str(exc))
                waiting = 1
            left += waiting
            settled += 1 - waiting
        self.unsettled = left
        if settled:
            await self._complete_session()
        await self.watch()
        return left

    async def run(self, vend_settled: Callable[[], bool], period_s: float = 0.25) -> None:
        """Supervised loop: set up a reader that reset or came back, and close payments left open once the
        vend journal they depend on is settled (``vend_settled``)."""
        offline_for = 0
        while True:
            try:
                if await self._leftovers():
                    if vend_settled():  # never before: the reader still holds what we may have to capture
                        await self.recover()
                else:
                    await self.watch()
            except SaleRefused as exc:
                log.warning("mdb_payment_watch", error=str(exc))
            working = self.reader.connected and self.reader.state in (ReaderState.ENABLED, *IN_SESSION)
            offline_for = 0 if working else offline_for + 1
            await self._offline_alarm(offline_for * period_s >= OFFLINE_ALARM_S)
            await asyncio.sleep(period_s)

    async def _offline_alarm(self, offline: bool) -> None:
        """Losing the card reader is a safety event: one alarm while no card sale can start, cleared on return."""
        if offline == self._alarmed:
            return
        async with self.db.tx() as tx:
            if offline:
                await repo.raise_alarm(
                    tx,
                    ALARM_OFFLINE,
                    "device_offline",
                    f"card reader not ready: {self.reader.last_error or self.reader.state.value}",
                    severity="critical",
                    data={"device": "mdb_reader"},
                )
            else:
                await repo.clear_alarm(tx, ALARM_OFFLINE, "card reader ready")
        self._alarmed = offline

    @property
    def connected(self) -> bool:
        """The adapter link is up (the device table lists the reader under "payment")."""
        return self.reader.connected

    @property
    def counters(self) -> dict[str, int]:
        return self.reader.counters

    async def close(self) -> None:
        await self.reader.stop()

    def status(self) -> dict[str, Any]:
        """What the technician page shows."""
        r = self.reader
        return {
            "state": r.state.value,
            "last_error": r.last_error,
            "connected": r.connected,
            "level": r.level,
            "always_idle": r.always_idle,
            "unsettled": self.unsettled,
            "model": r.peripheral.model if r.peripheral else "",
            "manufacturer": r.peripheral.manufacturer if r.peripheral else "",
            "counters": dict(r.counters),
        }

    async def totals(self) -> dict[str, int]:
        return await payments.payment_totals(self.db, METHOD)

async def start_mdb_payment(cfg: PaymentConfig, db: LedgerDB) -> MdbPayment:
    """The reader driver and the payment service for ``[payment] method = "mdb"`` (the daemon supervises
    ``run``). The driver starts at once; recovery and set-up happen in ``run`` and before each sale."""
    reader = CashlessReader(
        cfg.port,
        baudrate=cfg.baudrate,
        reply_timeout_s=cfg.reply_timeout_s,
        poll_interval_s=cfg.poll_interval_s,
    )
    await reader.start()
    return MdbPayment(
        db, reader, MdbPaymentConfig(card_wait_s=cfg.card_wait_s, approval_timeout_s=cfg.approval_timeout_s)
    )

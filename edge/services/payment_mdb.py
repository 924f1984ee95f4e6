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
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.errors import DeviceError, DeviceTimeout
from drivers.mdb import CashlessReader, OutOfSequenceError, ReaderReset, ReaderState, VendDecision
from drivers.mdb.codec import to_scaled
from edge.config import PaymentConfig
from edge.core.dex import minor_units
from edge.core.errors import SaleRefused
from edge.core.ports import Authorization
from edge.ledger import payments, repo
from edge.ledger.db import LedgerDB

log = structlog.get_logger(__name__)

METHOD = "mdb"
ALARM_OFFLINE = "device_offline:mdb_reader"
OFFLINE_ALARM_S = 3.0  # not working this long (after start, a reset, a lost cable): alarm
IN_SESSION = (ReaderState.SESSION_IDLE, ReaderState.VEND)


def mdb_item(slot_id: str) -> int:
    """The MDB item number of a spiral slot: row letter × 100 + column ('A1' → 101, 'E6' → 506)."""
    row, col = slot_id[:1].upper(), slot_id[1:]
    if not ("A" <= row <= "Z") or not col.isdigit() or not 0 < int(col) < 100:
        raise ValueError(f"slot {slot_id!r} has no MDB item number (expected a letter and 1..99)")
    return (ord(row) - 64) * 100 + int(col)


@dataclass(frozen=True)
class MdbPaymentConfig:
    card_wait_s: float = 30.0  # a Level 1 reader: how long the customer has to present a card
    approval_timeout_s: float = 30.0
    step_timeout_s: float = 5.0  # END SESSION, VEND DENIED after a cancel, initialisation


class MdbPayment:
    """The payment port over one ``CashlessReader``; the ledger is the source of truth."""

    def __init__(self, db: LedgerDB, reader: CashlessReader, config: MdbPaymentConfig | None = None) -> None:
        self.db = db
        self.reader = reader
        self.config = config or MdbPaymentConfig()
        self.unsettled = 0  # payments a bus failure left open; no new sale until ``recover`` closes them
        self._resets_at: dict[str, int] = {}
        self._live: set[str] = set()
        self._alarmed = False  # the device_offline alarm is raised
        self._settling = asyncio.Lock()  # settle and recover never send settling commands side by side

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

    async def _leftovers(self) -> bool:
        """Payments open in the ledger that no sale in progress owns (a restart's, a bus failure's)."""
        if self.unsettled:
            return True
        return any(p.payment_id not in self._live for p in await payments.open_payments(self.db, METHOD))

    async def watch(self) -> None:
        """Set a reader up again after it restarted by itself (JUST RESET) or came back; call often.

        Never while a payment is left open: a RESET would void an approval whose item may have fallen."""
        if not self.reader.connected or self.reader.ready:
            return
        if self.reader.state in IN_SESSION or await self._leftovers():
            return
        try:
            await self.reader.initialize(self.config.step_timeout_s)
        except (DeviceError, TimeoutError) as exc:
            log.warning("mdb_reader_init_failed", error=str(exc))

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

    # ---- steps -------------------------------------------------------------------------------

    async def _ensure_ready(self) -> None:
        if not self.reader.connected:
            raise SaleRefused("reader_offline", "the card reader's adapter is not connected")
        if self.reader.ready:
            return
        try:
            await self.reader.initialize(self.config.step_timeout_s)
        except (DeviceError, TimeoutError) as exc:
            raise SaleRefused("reader_offline", f"card reader not ready: {exc}") from exc

    def _wire_values(self, slot_id: str, amount: int, currency: str) -> tuple[int, int]:
        cfg = self.reader.config
        if cfg is None:
            raise SaleRefused("reader_offline", "card reader not set up")
        try:
            scaled = to_scaled(amount, minor_units(currency), cfg.scale, cfg.decimals)
            return mdb_item(slot_id), scaled
        except ValueError as exc:
            raise SaleRefused("price_not_payable", str(exc)) from exc

    async def _ask(self, payment_id: str, scaled: int, item: int) -> VendDecision:
        """VEND REQUEST and its answer. Any doubt ends in VEND CANCEL; an approval that races the cancel
        is refunded at once; a reader that cannot be reached leaves the payment open for ``recover``."""
        try:
            await self.reader.request_vend(scaled, item)
            return await self.reader.wait_decision(self.config.approval_timeout_s)
        except ReaderReset as exc:
            await self._close(payment_id, "voided", f"reader reset: {exc}")
            await self.watch()
            raise SaleRefused("reader_reset", "the card reader restarted") from exc
        except OutOfSequenceError as exc:
            await self._close(payment_id, "cancelled", str(exc))
            await self._complete_session()
            raise SaleRefused("reader_out_of_sequence", str(exc)) from exc
        except DeviceError as exc:
            reason = str(exc)
        try:
            late = await self.reader.cancel_vend(self.config.step_timeout_s)
        except (ReaderReset, OutOfSequenceError) as exc:
            await self._close(payment_id, "cancelled", f"{reason}; {exc}")
            raise SaleRefused("payment_timeout", reason) from exc
        except DeviceError as exc:
            self.unsettled += 1
            log.warning("payment_left_open", payment_id=payment_id, error=str(exc))
            raise SaleRefused("payment_timeout", reason) from exc
        if late.approved:  # approved just as we gave up: never dispense on it, give it back
            async with self.db.tx() as tx:
                await payments.set_payment_state(tx, payment_id, "refunding", error=reason)
            row = await payments.payment(self.db, payment_id)
            assert row is not None
            await self._finish(row, False, f"{reason}; approved after cancel", None)
        else:
            await self._close(payment_id, "cancelled", reason)
        await self._complete_session()
        raise SaleRefused("payment_timeout", reason)

    async def _finish(
        self, row: payments.PaymentRow, capture: bool, error: str, resets_at: int | None
    ) -> str:
        """VEND SUCCESS (capture) or VEND FAILURE (refund), with the intent journaled first."""
        intent = "capturing" if capture else "refunding"
        repeat = row.state == intent  # an earlier attempt may have reached the reader
        if not repeat:
            async with self.db.tx() as tx:
                await payments.set_payment_state(tx, row.payment_id, intent, error=error)
        try:
            done = await (self.reader.vend_success(row.item) if capture else self.reader.vend_failure())
            if not done:
                await self.reader.poll_now()  # a JUST RESET not polled yet explains the refusal
        except DeviceError as exc:
            self.unsettled += 1
            log.warning("payment_settle_deferred", payment_id=row.payment_id, intent=intent, error=str(exc))
            return intent
        reset = self.reader.state is ReaderState.INACTIVE or (
            resets_at is not None and self.reader.counters["resets_seen"] > resets_at
        )
        if done or (repeat and not reset):  # out of sequence after a repeat: the earlier one got through
            state = "captured" if capture else "refunded"
        elif capture and repeat:
            state = "capture_unknown"  # the reader restarted around our VEND SUCCESS: its processor knows
        else:
            state = "voided"  # the reader holds no approval (restarted, or gave up): nothing was taken
            error = error or ("reader reset before settlement" if reset else "reader refused settlement")
        await self._close(row.payment_id, state, error)
        return state

    async def _recover_one(self, row: payments.PaymentRow) -> int:
        if row.state == "requested":  # no approval recorded, so nothing was dispensed on it
            try:
                late = await self.reader.cancel_vend(self.config.step_timeout_s)
            except (ReaderReset, OutOfSequenceError):
                late = VendDecision(False)
            if late.approved:
                await self._close(row.payment_id, "refunding", "approved before restart")
                fresh = await payments.payment(self.db, row.payment_id)
                assert fresh is not None
                await self._finish(fresh, False, "approved before restart", None)
            else:
                await self._close(row.payment_id, "cancelled", "open at restart")
            return 0
        if row.state == "approved":
            outcome = await payments.vend_outcome(self.db, row.ref)
            if outcome == "unknown":
                return 1  # the vend flow settles its journal with the board first
            error = {"none": "not_dispensed", "unconfirmed": "drop_unconfirmed"}.get(outcome, "")
            await self._finish(row, outcome == "dropped", error, None)
            return 0
        await self._finish(row, row.state == "capturing", row.error, None)
        return 0

    async def _close(self, payment_id: str, state: str, error: str = "") -> None:
        async with self.db.tx() as tx:
            row = await payments.set_payment_state(tx, payment_id, state, error=error)
            if state == "capture_unknown":  # only the processor's report can tell: a person must look
                await repo.raise_alarm(
                    tx,
                    f"payment_capture_unknown:{payment_id}",
                    "payment_capture_unknown",
                    f"card payment {payment_id} ({row.amount} {row.currency}, slot {row.slot_id}):"
                    " the reader restarted around VEND SUCCESS; check the processor's report",
                    severity="critical",
                    data={"payment_id": payment_id},
                )
        log.info("payment_closed", payment_id=payment_id, state=state, error=error)

    async def _complete_session(self) -> None:
        if self.reader.state not in IN_SESSION:
            return
        try:
            await self.reader.complete_session(self.config.step_timeout_s)
        except DeviceError as exc:
            log.warning("mdb_session_complete_failed", error=str(exc))


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

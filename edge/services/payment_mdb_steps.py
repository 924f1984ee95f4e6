"""The bus steps of an MDB card payment, each journaled before it is sent (see payment_mdb.py).

``MdbSteps`` holds the payment service's state and the steps both a sale and recovery take: ask for
an approval, capture or refund with the intent written first, close a payment, end the reader's
session, set up a reader that reset. ``MdbPayment`` (payment_mdb.py) builds the port on them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from drivers.errors import DeviceError
from drivers.mdb import CashlessReader, OutOfSequenceError, ReaderReset, ReaderState, VendDecision
from drivers.mdb.codec import to_scaled
from edge.core.dex import minor_units
from edge.core.errors import SaleRefused
from edge.ledger import payments, repo
from edge.ledger.db import LedgerDB

log = structlog.get_logger("edge.services.payment_mdb")

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


class MdbSteps:
    """The payment service's state and its journaled bus steps; the ledger is the source of truth."""

    def __init__(self, db: LedgerDB, reader: CashlessReader, config: MdbPaymentConfig | None = None) -> None:
        self.db = db
        self.reader = reader
        self.config = config or MdbPaymentConfig()
        self.unsettled = 0  # payments a bus failure left open; no new sale until ``recover`` closes them
        self._resets_at: dict[str, int] = {}
        self._live: set[str] = set()
        self._alarmed = False  # the device_offline alarm is raised
        self._settling = asyncio.Lock()  # settle and recover never send settling commands side by side

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

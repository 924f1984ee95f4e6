"""Async driver: the machine as MDB master (VMC) of one cashless reader, through a Qibixx adapter.

One ``CashlessReader`` per reader. A background task POLLs the reader every ``poll_interval_s``
(MDB wants a steady poll; unsolicited news such as BEGIN SESSION, VEND APPROVED or JUST RESET only
arrives that way); commands share the bus with it under one lock, one line in flight at a time.
Every response updates ``state`` (the VMC's view of the reader's MDB state) and goes to an inbox
that the waiting calls read. The driver knows the device, not the business: who pays for what
and when to capture is the payment service's decision. See docs/protocols/mdb.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from drivers.errors import DeviceFault
from drivers.mdb import codec
from drivers.mdb.codec import (
    BeginSession,
    Command,
    OutOfSequence,
    PeripheralId,
    ReaderConfig,
    Resp,
    Response,
    Simple,
    VendApproved,
)
from drivers.mdb.link import ReaderLink, ReaderReset, ReaderState

__all__ = ["CashlessReader", "OutOfSequenceError", "ReaderReset", "ReaderState", "VendDecision"]


class OutOfSequenceError(DeviceFault):
    """The reader answered COMMAND OUT OF SEQUENCE: it is not in the state the command needs."""


@dataclass(frozen=True)
class VendDecision:
    approved: bool
    amount: int = 0  # scaled, as approved


class CashlessReader(ReaderLink):
    """Async driver for an MDB cashless reader behind a Qibixx MDB-USB / Pi Hat (tty or socket://).

    The link (connection, POLL, inbox, state) is ``ReaderLink``; here are the commands a payment uses."""

    @staticmethod
    def _check_sequence(command: Command, answer: list[Response]) -> None:
        if any(isinstance(r, OutOfSequence) for r in answer):
            raise OutOfSequenceError(f"reader refused {command.name} as out of sequence")

    # ---- public commands ---------------------------------------------------------------------

    async def initialize(self, timeout_s: float = 10.0) -> None:
        """RESET, SETUP (config, prices), EXPANSION REQUEST ID, Level 3 always-idle if offered, ENABLE."""
        async with asyncio.timeout(timeout_s):
            async with self._bus:  # no POLL in flight: a JUST RESET from before our RESET is dropped
                await self._start_master()
                self._inbox.clear()
                self._resetting = True
                await self._exchange(codec.reset(), retry=True)
            try:
                await self._take((), timeout_s, codes=(Resp.JUST_RESET,), reset_ok=True)
            finally:
                self._resetting = False
            self.level, self.always_idle = 1, False
            await self._command(codec.setup_config(self._vmc_level), retry=True)
            config = await self._take((ReaderConfig,), timeout_s)
            assert isinstance(config, ReaderConfig)
            await self._command(codec.setup_prices(0xFFFE, 0), retry=True)
            self._set_state(ReaderState.DISABLED)
            await self._command(codec.expansion_request_id(*self._vmc_id), retry=True)
            pid = await self._take((PeripheralId,), timeout_s)
            assert isinstance(pid, PeripheralId)
            if self.level >= 3 and pid.always_idle:
                await self._command(codec.expansion_enable_features(codec.FEATURE_ALWAYS_IDLE), retry=True)
                self.always_idle = True
            await self._command(codec.reader_enable(), retry=True)
            self._set_state(ReaderState.ENABLED)
        self._log.info(
            "mdb_reader_ready",
            level=self.level,
            always_idle=self.always_idle,
            model=pid.model,
            manufacturer=pid.manufacturer,
            scale=config.scale,
            decimals=config.decimals,
        )

    async def poll_now(self) -> None:
        """One POLL at once (e.g. before recovery decides anything: a JUST RESET or a late answer)."""
        async with self._bus:
            self.counters["polls"] += 1
            await self._exchange(codec.poll(), retry=True)

    async def wait_session(self, timeout_s: float) -> int:
        """Wait for BEGIN SESSION (a card presented); returns the funds (scaled, 0xFFFF unknown)."""
        if self.state is ReaderState.SESSION_IDLE:
            begun = [r for r in self._inbox if isinstance(r, BeginSession)]
            for r in begun:
                self._inbox.remove(r)
            return begun[-1].funds if begun else 0xFFFF
        resp = await self._take((BeginSession,), timeout_s)
        assert isinstance(resp, BeginSession)
        return resp.funds

    async def request_vend(self, price: int, item: int) -> None:
        """VEND REQUEST (never resent: a lost answer raises DeviceTimeout; then ``cancel_vend``)."""
        command = codec.vend_request(price, item)
        self._discard(
            lambda r: isinstance(r, VendApproved) or (isinstance(r, Simple) and r.code is Resp.VEND_DENIED)
        )
        self._check_sequence(command, await self._command(command))
        self._set_state(ReaderState.VEND)

    async def wait_decision(self, timeout_s: float) -> VendDecision:
        """VEND APPROVED or VEND DENIED; raises ReaderReset, DeviceTimeout (then ``cancel_vend``)."""
        resp = await self._take((VendApproved,), timeout_s, codes=(Resp.VEND_DENIED,))
        if isinstance(resp, VendApproved):
            return VendDecision(True, resp.amount)
        return VendDecision(False)

    async def cancel_vend(self, timeout_s: float) -> VendDecision:
        """VEND CANCEL; the reader answers VEND DENIED — or VEND APPROVED if it approved just before."""
        command = codec.vend_cancel()
        self._check_sequence(command, await self._command(command, retry=True))
        return await self.wait_decision(timeout_s)

    async def vend_success(self, item: int) -> bool:
        """VEND SUCCESS: the reader captures. False when it says out of sequence (no vend open any more)."""
        return await self._finish(codec.vend_success(item))

    async def vend_failure(self) -> bool:
        """VEND FAILURE: the reader refunds/voids. False when it says out of sequence."""
        return await self._finish(codec.vend_failure())

    async def _finish(self, command: Command) -> bool:
        # Safe to repeat: a second one after the first got through is answered out of sequence, and
        # the reader settles each approved vend once.
        answer = await self._command(command, retry=True)
        try:
            self._check_sequence(command, answer)
        except OutOfSequenceError:
            return False
        self._set_state(ReaderState.SESSION_IDLE)
        return True

    async def complete_session(self, timeout_s: float) -> None:
        """SESSION COMPLETE, then wait for END SESSION (a reader without a session: out of sequence, fine)."""
        command = codec.session_complete()
        answer = await self._command(command, retry=True)
        try:
            self._check_sequence(command, answer)
        except OutOfSequenceError:
            self._set_state(ReaderState.ENABLED)
            return
        await self._take((), timeout_s, codes=(Resp.END_SESSION,))

    async def cash_sale(self, price: int, item: int) -> None:
        """CASH SALE: report a sale paid another way (for the reader's audit); never resent."""
        await self._command(codec.cash_sale(price, item))

    async def __aenter__(self) -> CashlessReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""The vend board session (protocol v2): handshake, sequence ids, boot ids, retries, reconnect.

One ``VendBoard`` per physical board. Sequence ids for VEND and DOOR_UNLOCK come from the caller
(the journal), must be 1..0x7FFFFFFF and are resent unchanged on retry. Every frame carries a boot
id: the board's own in what it sends, the one the controller believes current in what it sends. A
VEND or DOOR_UNLOCK addressed to a boot the board is not in is refused (NAK stale_boot), so a retry
can never reach a board that forgot the seq. **After an ACK the driver never sends that VEND again**:
it waits for VEND_DONE and polls with VEND_RESULT, which is safe after a reboot. The driver numbers
its own read-only requests (HELLO, STATUS, DOOR_STATE, LIGHT, VEND_RESULT) from 0x80000000 upward;
seq 0 is the board's unsolicited events. See docs/protocols/vend-board.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from drivers.errors import DeviceTimeout, ProtocolError
from drivers.vend_board import codec
from drivers.vend_board.codec import (
    Ack,
    DoorStateReply,
    DoorStateReq,
    DoorUnlockReq,
    ErrorCode,
    Frame,
    LightReq,
    Nak,
    StatusReply,
    StatusReq,
    VendDone,
    VendReq,
    VendResultReply,
    VendResultReq,
)
from drivers.vend_board.errors import BoardRebooted, SlotMismatch, VendInterrupted
from drivers.vend_board.models import (
    BoardStatus,
    DoorState,
    VendOutcome,
    VendQuery,
    VendResult,
    plausible_current,
    state_name,
)
from drivers.vend_board.session import BoardSession

log = structlog.get_logger(__name__)

OnAck = Callable[[int], Awaitable[None]]  # called with the boot id the ACK came from


class VendBoard(BoardSession):
    """Async driver for the spiral/motor vend board over a tty path or ``socket://host:port``."""

    # ---- vending -----------------------------------------------------------------------------

    async def vend(self, slot: str, seq: int, *, boot: int | None = None, on_ack: OnAck | None = None) -> VendResult:
        """Dispense from ``slot`` once per ``seq``, addressed to board boot ``boot`` (default: current).

        ``on_ack(boot)`` is awaited once the board has ACKed (the caller journals it). Raises
        VendRefused (``definitive`` when the board certainly did not run it), DeviceTimeout,
        DeviceDisconnected, BoardRebooted, VendInterrupted, SlotMismatch or another ProtocolError:
        the outcome is then unknown and must be settled with ``query_vend`` — never by re-vending.
        """
        codec.encode_slot(slot)
        self._check_seq(seq)
        req = VendReq(seq, slot, self._boot if boot is None else boot)
        async with self._vend_lock:
            done: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._done_waiters[seq] = done
            try:
                async with asyncio.timeout(self._vend_timeout_s):
                    result = await self._vend_exchange(req, done, on_ack)
            except TimeoutError as exc:
                self.counters["timeouts"] += 1
                raise DeviceTimeout(f"vend seq={seq} slot={slot} unfinished after "
                                    f"{self._vend_timeout_s}s") from exc
            finally:
                del self._done_waiters[seq]
                if done.done() and not done.cancelled():
                    done.exception()  # mark retrieved; the caller already got this error another way
                done.cancel()
        self._log.debug("vend_finished", seq=seq, slot=slot, outcome=result.outcome.value, motor_ms=result.motor_ms)
        return result

    async def _vend_exchange(self, req: VendReq, done: asyncio.Future[Frame], on_ack: OnAck | None) -> VendResult:
        reply, copies = await self._exchange(req, not_across_reset=True)
        if isinstance(reply, VendDone):  # a retried copy reached a board that had already finished it
            return self._result(req, reply)
        self._expect(reply, Ack, f"VEND {req.slot}", copies=copies)
        if reply.boot != req.boot:
            raise ProtocolError(f"ACK for VEND seq={req.seq} from boot {reply.boot}, addressed to {req.boot}")
        if on_ack is not None:
            await on_ack(reply.boot)
        while True:  # from here on the VEND frame is never sent again
            finished = await self._await_done(done)
            if finished is None:
                finished = await self._poll(req)
            if finished is not None:
                return self._result(req, finished)

    async def _poll(self, req: VendReq) -> Frame | None:
        """Ask VEND_RESULT once; None while the motor runs (or the poll got no answer)."""
        self.counters["polls"] += 1
        try:
            reply = await self._request(VendResultReq(self._next_driver_seq(), req.seq, req.boot))
        except DeviceTimeout:
            return None  # tolerated until the vend deadline; the board may be busy or rebooting
        self._expect(reply, VendResultReply, "VEND_RESULT")
        assert isinstance(reply, VendResultReply)
        q = self._query(reply, req.seq)
        if q.state == "done":
            return reply
        if q.state == "in_progress":
            if reply.boot != req.boot:
                raise ProtocolError(f"board in boot {reply.boot} claims VEND seq={req.seq} of boot {req.boot} runs")
            return None
        if q.state == "interrupted":
            raise VendInterrupted(f"VEND seq={req.seq} was interrupted by a board reset (boot {reply.boot})")
        if reply.boot != req.boot:
            raise BoardRebooted(f"board rebooted (boot {req.boot} -> {reply.boot}) and does not know VEND "
                                f"seq={req.seq} it had ACKed")
        raise ProtocolError(f"board forgot VEND seq={req.seq} it ACKed without a reboot")

    def _result(self, req: VendReq, frame: Frame) -> VendResult:
        if isinstance(frame, VendDone):
            outcome, slot, motor_ms = VendOutcome.from_code(frame.outcome), frame.slot, frame.motor_ms
        elif isinstance(frame, VendResultReply) and frame.outcome is not None and frame.slot is not None:
            outcome, slot, motor_ms = VendOutcome.from_code(frame.outcome), frame.slot, frame.motor_ms
        else:
            raise ProtocolError(f"VEND seq={req.seq} reported done without an outcome and slot: {frame!r}")
        result = VendResult(seq=req.seq, slot=slot, outcome=outcome, motor_ms=motor_ms, boot=frame.boot,
                            current=plausible_current(frame.current))
        if slot != req.slot:
            raise SlotMismatch(req.slot, result)
        return result

    async def _await_done(self, done: asyncio.Future[Frame]) -> Frame | None:
        """Wait one poll period for VEND_DONE; wake early on line noise or a board reboot."""
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = wake
        try:
            waits: list[asyncio.Future[Any]] = [done, wake]
            await asyncio.wait(waits, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
        return done.result() if done.done() else None

    def _query(self, reply: VendResultReply, seq: int) -> VendQuery:
        if reply.target != seq:
            raise ProtocolError(f"VEND_RESULT answered for seq {reply.target}, asked {seq}")
        state = state_name(reply.state)
        outcome = None if reply.outcome is None else VendOutcome.from_code(reply.outcome)
        if state == "done" and (outcome is None or reply.slot is None):
            raise ProtocolError(f"VEND_RESULT for seq {seq} says done without an outcome and slot")
        # the memory learnt at HELLO belongs to that boot; an answer from another boot (a reset since)
        # is judged as from a board that keeps nothing — the safe side (never a refund it cannot back)
        memory = self.info.memory if self.info is not None and self.info.boot == reply.boot else 0
        return VendQuery(seq=seq, state=state, outcome=outcome, slot=reply.slot, boot=reply.boot,
                         memory=memory, motor_ms=reply.motor_ms, current=plausible_current(reply.current))

    async def query_vend(self, seq: int) -> VendQuery:
        """Ask the board what became of the vend with ``seq`` (safe at any time, after any reset)."""
        self._check_seq(seq)
        reply = await self._request(VendResultReq(self._next_driver_seq(), seq, self._boot))
        self._expect(reply, VendResultReply, "VEND_RESULT")
        assert isinstance(reply, VendResultReply)
        return self._query(reply, seq)

    # ---- door, light, status -----------------------------------------------------------------

    async def unlock_door(self, ms: int, seq: int) -> None:
        """Unlock the door for ``ms`` (1..65535); the board relocks by itself. Idempotent per seq and boot."""
        self._check_seq(seq)
        if not 1 <= ms <= 0xFFFF:
            raise ValueError(f"unlock ms {ms} outside 1..65535")
        reply = await self._request(DoorUnlockReq(seq, ms, self._boot))
        if isinstance(reply, Nak) and reply.error == ErrorCode.STALE_BOOT:
            # the board was reset since we last heard it; its NAK told us the new boot id
            reply = await self._request(DoorUnlockReq(seq, ms, self._boot))
        self._expect(reply, Ack, "DOOR_UNLOCK")

    async def door_state(self) -> DoorState:
        reply = await self._request(DoorStateReq(self._next_driver_seq(), self._boot))
        self._expect(reply, DoorStateReply, "DOOR_STATE")
        assert isinstance(reply, DoorStateReply)
        return DoorState(closed=reply.closed, locked=reply.locked)

    async def set_light(self, on: bool) -> None:
        self._expect(await self._request(LightReq(self._next_driver_seq(), on, self._boot)), Ack, "LIGHT")

    async def status(self) -> BoardStatus:
        reply = await self._request(StatusReq(self._next_driver_seq(), self._boot))
        self._expect(reply, StatusReply, "STATUS")
        assert isinstance(reply, StatusReply)
        return BoardStatus(firmware=reply.firmware, busy=reply.busy,
                           door=DoorState(closed=reply.door_closed, locked=reply.door_locked),
                           counters=dict(reply.counters))

    async def __aenter__(self) -> VendBoard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""The vend board session: requests, sequence ids, retries, timeouts, reconnect.

One ``VendBoard`` per physical board. Sequence ids for VEND and DOOR_UNLOCK come from the caller
(the journal), must be 1..0x7FFFFFFF and are resent unchanged on retry, so the board's idempotency
cache guarantees at most one dispense per id. The driver numbers its own read-only requests
(STATUS, DOOR_STATE, LIGHT, VEND_RESULT) from 0x80000000 upward; seq 0 is the board's unsolicited
events. See docs/protocols/vend-board.md.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable
from typing import Any

import structlog

from drivers.errors import DeviceDisconnected, DeviceFault, DeviceTimeout, ProtocolError
from drivers.vend_board import codec
from drivers.vend_board.codec import (
    Ack,
    DoorStateReply,
    DoorStateReq,
    DoorUnlockReq,
    ErrorCode,
    Frame,
    FrameReader,
    LightReq,
    Nak,
    StatusReply,
    StatusReq,
    VendDone,
    VendReq,
    VendResultReply,
    VendResultReq,
)
from drivers.vend_board.models import BoardStatus, DoorState, VendOutcome, VendQuery, VendResult
from drivers.vend_board.transport import Link, open_link

log = structlog.get_logger(__name__)

MAX_CALLER_SEQ = 0x7FFF_FFFF
DRIVER_SEQ_BASE = 0x8000_0000
BACKOFF_START_S = 0.05
FRAME_LOG_LEN = 200


class VendRefused(DeviceFault):
    """The board NAKed a command (``reason``: 'bad_slot', 'busy', 'bad_frame', ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class VendBoard:
    """Async driver for the spiral/motor vend board over a tty path or ``socket://host:port``."""

    def __init__(self, port: str, *, baudrate: int = 57600, reply_timeout_s: float = 0.5,
                 retries: int = 3, vend_timeout_s: float = 15.0, reconnect_max_s: float = 5.0) -> None:
        if port.startswith("socket://") and ":" not in port[len("socket://"):]:
            raise ValueError(f"bad port {port!r}: expected socket://host:port or a tty path")
        self._port = port
        self._baudrate = baudrate
        self._reply_timeout_s = reply_timeout_s
        self._retries = retries
        self._vend_timeout_s = vend_timeout_s
        self._reconnect_max_s = reconnect_max_s
        # While a motor runs, re-ask (same seq, idempotent) this often in case VEND_DONE was lost.
        self._poll_s = max(2 * reply_timeout_s, 0.2)
        self.counters: dict[str, int] = dict.fromkeys(
            ("frames_sent", "frames_received", "crc_errors", "garbage_bytes", "timeouts", "retries",
             "reconnects", "disconnects", "unmatched"), 0)
        self.frame_log: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=FRAME_LOG_LEN)
        self.on_frame_sent: Callable[[Frame], None] | None = None  # e.g. the reliability harness' crash point
        self._reader = FrameReader()
        self._seen = (0, 0)  # reader counts already added to self.counters
        self._link: Link | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._noise: asyncio.Future[None] | None = None  # one per VEND_DONE wait; set on line noise
        self._waiters: dict[int, asyncio.Future[Frame]] = {}
        self._done_waiters: dict[int, asyncio.Future[Frame]] = {}
        self._vend_lock = asyncio.Lock()
        self._driver_seq = 0
        self._callbacks: list[Callable[[DoorState], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._log = log.bind(device="vend_board", port=port)

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link is not None

    async def start(self) -> None:
        """Start the reconnect task; returns at once, even when the port is absent."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect_loop(), name="vend_board.reconnect")

    async def stop(self) -> None:
        """Stop reconnecting, close the link, fail pending calls with DeviceDisconnected."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        link, self._link = self._link, None
        if link is not None:
            link.close()
        self._connected.clear()
        self._fail_pending(DeviceDisconnected("vend board driver stopped"))

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until the link is up; raises DeviceDisconnected after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError as exc:
            raise DeviceDisconnected(f"vend board {self._port} not connected after {timeout_s}s") from exc

    def on_event(self, callback: Callable[[DoorState], None]) -> None:
        """Call ``callback(DoorState)`` for every unsolicited door change the board reports."""
        self._callbacks.append(callback)

    async def _connect_loop(self) -> None:
        delay, first, quiet = BACKOFF_START_S, True, False
        while True:
            try:
                link = await open_link(self._port, self._baudrate, self._on_data, self._on_lost,
                                       timeout_s=max(self._reply_timeout_s, 1.0))
            except (OSError, TimeoutError) as exc:
                if not quiet:
                    self._log.warning("vend_board_unavailable", error=str(exc))
                    quiet = True
                await asyncio.sleep(delay * (0.5 + 0.5 * self._rng.random()))
                delay = min(delay * 2, self._reconnect_max_s)
                continue
            self._reader, self._seen = FrameReader(), (0, 0)
            self._link = link
            if not first:
                self.counters["reconnects"] += 1
            self._log.info("vend_board_connected", reconnect=not first)
            first, quiet, delay = False, False, BACKOFF_START_S
            self._lost.clear()
            self._connected.set()
            await self._lost.wait()

    def _on_lost(self, exc: Exception | None) -> None:
        self._link = None
        self._connected.clear()
        self.counters["disconnects"] += 1
        self._log.warning("vend_board_disconnected", error=str(exc) if exc else "eof")
        self._fail_pending(DeviceDisconnected(f"vend board link {self._port} lost"))
        self._lost.set()

    def _fail_pending(self, exc: DeviceDisconnected) -> None:
        for fut in [*self._waiters.values(), *self._done_waiters.values()]:
            if not fut.done():
                fut.set_exception(exc)

    # ---- frames in/out -----------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        self._handle(self._reader.feed(data))

    def _handle(self, frames: list[Frame]) -> None:
        reader = self._reader
        crc, junk = reader.crc_errors - self._seen[0], reader.garbage_bytes - self._seen[1]
        if crc or junk:
            self.counters["crc_errors"] += crc
            self.counters["garbage_bytes"] += junk
            self._seen = (reader.crc_errors, reader.garbage_bytes)
            if self._noise is not None and not self._noise.done():
                self._noise.set_result(None)
        for frame in frames:
            self.counters["frames_received"] += 1
            self.frame_log.append((time.time(), "rx", codec.encode(frame).hex()))
            self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        if frame.seq == 0 and isinstance(frame, DoorStateReply):
            self._emit(DoorState(closed=frame.closed, locked=frame.locked))
            return
        matched = False
        done = self._done_waiters.get(frame.seq) if isinstance(frame, VendDone) else None
        for fut in (done, self._waiters.get(frame.seq)):
            if fut is not None and not fut.done():
                fut.set_result(frame)
                matched = True
        if not matched:
            self.counters["unmatched"] += 1

    def _emit(self, state: DoorState) -> None:
        for callback in self._callbacks:
            try:
                callback(state)
            except Exception:  # a subscriber's bug must not kill the reader
                self._log.exception("vend_board_event_callback_failed")

    def _send(self, msg: Frame) -> None:
        link = self._link
        if link is None:
            raise DeviceDisconnected(f"vend board {self._port} not connected")
        raw = codec.encode(msg)
        link.write(raw)
        self.counters["frames_sent"] += 1
        self.frame_log.append((time.time(), "tx", raw.hex()))
        if self.on_frame_sent is not None:
            self.on_frame_sent(msg)

    async def _request(self, msg: Frame) -> Frame:
        """Send and await the reply with the same seq; resend the SAME frame on timeout/bad_frame."""
        seq, last_nak = msg.seq, None
        if seq in self._waiters:
            raise ValueError(f"seq {seq} already in flight")
        for attempt in range(self._retries + 1):
            if attempt:
                self.counters["retries"] += 1
                self._handle(self._reader.drop_partial())
            fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._waiters[seq] = fut
            try:
                self._send(msg)
                async with asyncio.timeout(self._reply_timeout_s):
                    reply = await fut
            except TimeoutError:
                self.counters["timeouts"] += 1
                continue
            finally:
                if self._waiters.get(seq) is fut:
                    del self._waiters[seq]
            if isinstance(reply, Nak) and reply.error is ErrorCode.BAD_FRAME:
                last_nak = reply
                continue
            return reply
        name = type(msg).__name__
        if last_nak is not None:
            raise ProtocolError(f"board rejected {name} seq={seq} as bad_frame {self._retries + 1} times")
        raise DeviceTimeout(f"no reply to {name} seq={seq} after {self._retries + 1} tries")

    def _next_driver_seq(self) -> int:
        while True:
            self._driver_seq = (self._driver_seq + 1) % DRIVER_SEQ_BASE
            seq = DRIVER_SEQ_BASE | self._driver_seq
            if seq not in self._waiters:
                return seq

    @staticmethod
    def _check_seq(seq: int) -> None:
        if not 1 <= seq <= MAX_CALLER_SEQ:
            raise ValueError(f"seq {seq} outside 1..{MAX_CALLER_SEQ}")

    @staticmethod
    def _expect(reply: Frame, kind: type, what: str) -> None:
        if isinstance(reply, Nak):
            raise VendRefused(reply.error.name.lower(), f"board refused {what}")
        if not isinstance(reply, kind):
            raise ProtocolError(f"unexpected {type(reply).__name__} in reply to {what}")

    # ---- public commands ---------------------------------------------------------------------

    async def vend(self, slot: str, seq: int) -> VendResult:
        """Dispense from ``slot`` once per ``seq``; retried frames reuse ``seq`` (never a double vend).

        Raises DeviceTimeout, DeviceDisconnected (the outcome is then unknown: ask ``query_vend``),
        ProtocolError, or DeviceFault/VendRefused ('bad_slot', 'busy').
        """
        codec.encode_slot(slot)
        self._check_seq(seq)
        async with self._vend_lock:
            try:
                async with asyncio.timeout(self._vend_timeout_s):
                    done = await self._vend_exchange(VendReq(seq, slot))
            except TimeoutError as exc:
                self.counters["timeouts"] += 1
                raise DeviceTimeout(f"vend seq={seq} slot={slot} unfinished after "
                                    f"{self._vend_timeout_s}s") from exc
        outcome = VendOutcome.from_code(done.outcome)
        self._log.debug("vend_finished", seq=seq, slot=slot, outcome=outcome.value, motor_ms=done.motor_ms)
        return VendResult(seq=seq, slot=done.slot, outcome=outcome, motor_ms=done.motor_ms)

    async def _vend_exchange(self, req: VendReq) -> VendDone:
        done: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._done_waiters[req.seq] = done
        try:
            reply = await self._request(req)
            while not isinstance(reply, VendDone):
                self._expect(reply, Ack, f"VEND {req.slot}")
                finished = await self._await_done(done)
                if isinstance(finished, VendDone):
                    return finished
                self.counters["retries"] += 1
                reply = await self._request(req)  # same seq: the board answers ACK or the stored result
            return reply
        finally:
            del self._done_waiters[req.seq]
            if done.done() and not done.cancelled():
                done.exception()  # mark retrieved; the caller already got this error another way
            done.cancel()

    async def _await_done(self, done: asyncio.Future[Frame]) -> Frame | None:
        """Wait one poll period for VEND_DONE; wake early when line noise may have eaten it."""
        noise: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._noise = noise
        try:
            waits: list[asyncio.Future[Any]] = [done, noise]
            await asyncio.wait(waits, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            noise.cancel()
        return done.result() if done.done() else None

    async def query_vend(self, seq: int) -> VendQuery:
        """Ask the board what became of the vend with ``seq`` (reconciliation after a restart)."""
        self._check_seq(seq)
        reply = await self._request(VendResultReq(self._next_driver_seq(), seq))
        self._expect(reply, VendResultReply, "VEND_RESULT")
        assert isinstance(reply, VendResultReply)
        if reply.target != seq:
            raise ProtocolError(f"VEND_RESULT answered for seq {reply.target}, asked {seq}")
        outcome = None if reply.outcome is None else VendOutcome.from_code(reply.outcome)
        return VendQuery(seq=seq, state=reply.state.name.lower(), outcome=outcome, slot=reply.slot)

    async def unlock_door(self, ms: int, seq: int) -> None:
        """Unlock the door for ``ms`` (1..65535); the board relocks by itself. Idempotent per seq."""
        self._check_seq(seq)
        if not 1 <= ms <= 0xFFFF:
            raise ValueError(f"unlock ms {ms} outside 1..65535")
        self._expect(await self._request(DoorUnlockReq(seq, ms)), Ack, "DOOR_UNLOCK")

    async def door_state(self) -> DoorState:
        reply = await self._request(DoorStateReq(self._next_driver_seq()))
        self._expect(reply, DoorStateReply, "DOOR_STATE")
        assert isinstance(reply, DoorStateReply)
        return DoorState(closed=reply.closed, locked=reply.locked)

    async def set_light(self, on: bool) -> None:
        self._expect(await self._request(LightReq(self._next_driver_seq(), on)), Ack, "LIGHT")

    async def status(self) -> BoardStatus:
        reply = await self._request(StatusReq(self._next_driver_seq()))
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

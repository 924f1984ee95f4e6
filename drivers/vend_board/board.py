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
import collections
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from drivers.errors import DeviceDisconnected, DeviceError, DeviceFault, DeviceTimeout, ProtocolError
from drivers.vend_board import codec
from drivers.vend_board.codec import (
    NAK_CODES,
    PROTOCOL_VERSION,
    Ack,
    DoorStateReply,
    DoorStateReq,
    DoorUnlockReq,
    ErrorCode,
    Frame,
    FrameReader,
    HelloReply,
    HelloReq,
    LightReq,
    Nak,
    StatusReply,
    StatusReq,
    VendDone,
    VendReq,
    VendResultReply,
    VendResultReq,
)
from drivers.vend_board.models import (
    BoardInfo,
    BoardStatus,
    DoorState,
    VendOutcome,
    VendQuery,
    VendResult,
    state_name,
)
from drivers.vend_board.transport import Link, open_link

log = structlog.get_logger(__name__)

MAX_CALLER_SEQ = 0x7FFF_FFFF
DRIVER_SEQ_BASE = 0x8000_0000
BACKOFF_START_S = 0.05
FRAME_LOG_LEN = 200
OnAck = Callable[[int], Awaitable[None]]  # called with the boot id the ACK came from


class VendRefused(DeviceFault):
    """The board NAKed a command (``reason``: 'bad_slot', 'busy', 'bad_frame', 'stale_boot').

    ``definitive``: the NAK answered the only copy sent, so the board has certainly not run this seq.
    With more than one copy out the NAK may answer an older copy while a newer one was accepted.
    """

    def __init__(self, reason: str, message: str, *, definitive: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.definitive = definitive


class BoardRebooted(DeviceError):
    """The board answered from another boot id and does not know the vend: its outcome is unknown."""


class VendInterrupted(DeviceError):
    """The board says the vend was under way when it lost power; whether the item fell is unknown."""


class SlotMismatch(ProtocolError):
    """The board reports a vend from another slot than the one asked for (miswired or lying)."""

    def __init__(self, asked: str, result: VendResult) -> None:
        super().__init__(f"asked to vend {asked}, the board reports {result.slot}")
        self.asked = asked
        self.result = result


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
        # While a motor runs, ask VEND_RESULT this often in case VEND_DONE was lost.
        self._poll_s = max(2 * reply_timeout_s, 0.2)
        self.counters: dict[str, int] = dict.fromkeys(
            ("frames_sent", "frames_received", "crc_errors", "garbage_bytes", "timeouts", "retries",
             "reconnects", "disconnects", "unmatched", "reboots", "polls"), 0)
        self.frame_log: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=FRAME_LOG_LEN)
        self.on_frame_sent: Callable[[Frame], None] | None = None  # e.g. the reliability harness' crash point
        self.info: BoardInfo | None = None  # the last handshake; None until HELLO succeeded on this link
        self.incompatible: str | None = None  # why the handshake fails (v1 board, wrong version, silence)
        self._boot = 0  # the board's boot id as last seen in any frame it sent
        self._reader = FrameReader()
        self._seen = (0, 0)  # reader counts already added to self.counters
        self._raw_tail = bytearray()  # recent raw bytes, to recognise a v1 board that ignores HELLO
        self._link: Link | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None  # one per VEND_DONE wait; set on noise or reboot
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
        """The link is up and the board passed the v2 handshake: sales may be journaled."""
        return self._link is not None and self._connected.is_set()

    @property
    def boot_id(self) -> int:
        """The board's boot id as last seen (0 before the first handshake)."""
        return self._boot

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
        """Wait until the link is up and handshaken; raises DeviceDisconnected after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError as exc:
            why = f" ({self.incompatible})" if self.incompatible else ""
            raise DeviceDisconnected(f"vend board {self._port} not connected after {timeout_s}s{why}") from exc

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
            self._reader, self._seen, self.info = FrameReader(), (0, 0), None
            self._link = link
            self._lost.clear()
            if not first:
                self.counters["reconnects"] += 1
            first, quiet, delay = False, False, BACKOFF_START_S
            await self._handshake_until_ok()
            await self._lost.wait()

    async def _handshake_until_ok(self) -> None:
        """HELLO until the board answers as a v2 board, backing off; give up only when the link goes."""
        delay, logged = BACKOFF_START_S, None
        while not self._lost.is_set():
            try:
                await self._hello()
            except DeviceDisconnected:
                return
            except DeviceError as exc:
                why = await self._why_no_hello(exc)
                if why != logged:
                    self._log.error("vend_board_incompatible", reason=why)
                    logged = why
                self.incompatible = why
                await asyncio.sleep(delay * (0.5 + 0.5 * self._rng.random()))
                delay = min(delay * 2, self._reconnect_max_s)
                continue
            self.incompatible = None
            assert self.info is not None
            self._log.info("vend_board_connected", boot=self.info.boot, memory=self.info.memory,
                           firmware=self.info.firmware, version=self.info.version)
            self._connected.set()
            return

    async def _hello(self) -> BoardInfo:
        reply = await self._request(HelloReq(self._next_driver_seq()))
        self._expect(reply, HelloReply, "HELLO")
        assert isinstance(reply, HelloReply)
        if reply.version != PROTOCOL_VERSION:
            raise ProtocolError(f"board speaks protocol v{reply.version}, this driver v{PROTOCOL_VERSION}")
        if reply.boot == 0:
            raise ProtocolError("board reports boot id 0 (reserved)")
        self.info = BoardInfo(version=reply.version, boot=reply.boot, memory=reply.memory, firmware=reply.firmware)
        self._boot = reply.boot
        return self.info

    async def _why_no_hello(self, exc: DeviceError) -> str:
        """Tell a v1 board (answers a v1 STATUS) from a silent or broken one, for a clear alarm."""
        if not isinstance(exc, DeviceTimeout) or self._link is None:
            return f"handshake failed: {exc}"
        self._raw_tail.clear()
        try:
            self._link.write(codec.encode_v1_status(DRIVER_SEQ_BASE))
        except DeviceError:
            return f"no answer to HELLO: {exc}"
        await asyncio.sleep(self._reply_timeout_s)
        if codec.find_v1_frame(bytes(self._raw_tail)) is not None:
            return "board speaks protocol v1 only (no boot id, no HELLO): refused, upgrade its firmware"
        return f"no answer to HELLO: {exc}"

    async def current_boot(self) -> int:
        """The boot id to address the next VEND to; re-handshakes when the board rebooted since HELLO."""
        if self.info is None or not self.connected:
            raise DeviceDisconnected(f"vend board {self._port} not connected")
        if self.info.boot != self._boot:
            await self._hello()
        return self._boot

    def _on_lost(self, exc: Exception | None) -> None:
        self._link = None
        self.info = None
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
        self._raw_tail += data
        del self._raw_tail[:-512]
        self._handle(self._reader.feed(data))

    def _handle(self, frames: list[Frame]) -> None:
        reader = self._reader
        crc, junk = reader.crc_errors - self._seen[0], reader.garbage_bytes - self._seen[1]
        if crc or junk:
            self.counters["crc_errors"] += crc
            self.counters["garbage_bytes"] += junk
            self._seen = (reader.crc_errors, reader.garbage_bytes)
            self._wake_up()
        for frame in frames:
            self.counters["frames_received"] += 1
            self.frame_log.append((time.time(), "rx", codec.encode(frame).hex()))
            self._note_boot(frame)
            self._dispatch(frame)

    def _note_boot(self, frame: Frame) -> None:
        """Every board frame carries its boot id: a new one means the board was reset."""
        if frame.boot and frame.boot != self._boot and self.info is not None:
            self.counters["reboots"] += 1
            self._log.warning("vend_board_rebooted", old_boot=self._boot, new_boot=frame.boot)
            self._boot = frame.boot
            self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

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
        return (await self._exchange(msg))[0]

    async def _exchange(self, msg: Frame) -> tuple[Frame, int]:
        """Send and await the reply with the same seq; resend the SAME frame on timeout/bad_frame.

        Returns the reply and how many copies were sent.
        """
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
            if isinstance(reply, Nak) and reply.error == ErrorCode.BAD_FRAME:
                last_nak = reply
                continue
            return reply, attempt + 1
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
    def _expect(reply: Frame, kind: type, what: str, *, copies: int = 1) -> None:
        if isinstance(reply, Nak):
            if reply.error not in NAK_CODES:
                raise ProtocolError(f"NAK reason {reply.error} to {what} is outside the protocol (5..8)")
            raise VendRefused(ErrorCode(reply.error).name.lower(), f"board refused {what}", definitive=copies == 1)
        if not isinstance(reply, kind):
            raise ProtocolError(f"unexpected {type(reply).__name__} in reply to {what}")

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
        reply, copies = await self._exchange(req)
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
        result = VendResult(seq=req.seq, slot=slot, outcome=outcome, motor_ms=motor_ms, boot=frame.boot)
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
        memory = self.info.memory if self.info is not None else 0
        return VendQuery(seq=seq, state=state, outcome=outcome, slot=reply.slot, boot=reply.boot,
                         memory=memory, motor_ms=reply.motor_ms)

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

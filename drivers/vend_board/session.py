"""The vend board link session (protocol v2): reconnect, HELLO handshake, boot ids, frames in and out,
requests matched by seq with retries of the identical frame. ``VendBoard`` (board.py) adds the
commands. See docs/protocols/vend-board.md.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable

import structlog

from drivers.backoff import Backoff
from drivers.errors import DeviceDisconnected, DeviceError, DeviceTimeout, ProtocolError
from drivers.vend_board import codec
from drivers.vend_board.codec import (
    NAK_CODES,
    PROTOCOL_VERSION,
    DoorStateReply,
    ErrorCode,
    Frame,
    FrameReader,
    HelloReply,
    HelloReq,
    Nak,
    VendDone,
)
from drivers.vend_board.errors import BoardRebooted, VendRefused
from drivers.vend_board.models import (
    BoardInfo,
    DoorState,
)
from drivers.vend_board.transport import Link, open_link

log = structlog.get_logger("drivers.vend_board.board")

MAX_CALLER_SEQ = 0x7FFF_FFFF
DRIVER_SEQ_BASE = 0x8000_0000
BACKOFF_START_S = 0.05
FRAME_LOG_LEN = 200


class BoardSession:
    """One link to one board: the transport, the handshake, the boot id, request/reply by seq."""

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
    def memory(self) -> int:
        """Vend outcomes the board said (at the last HELLO) it keeps across a reset; 0 before one."""
        return self.info.memory if self.info is not None else 0

    @property
    def last_seq(self) -> int:
        """The highest caller seq the board said (at the last HELLO) it remembers: never reuse one."""
        return self.info.last_seq if self.info is not None else 0

    @property
    def boot_id(self) -> int:
        """The board's boot id as last seen (0 before the first handshake)."""
        return self._boot

    async def start(self) -> None:
        """Start the link task itself (standalone use); a daemon runs ``run()`` under its supervisor."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="vend_board.reconnect")

    async def run(self) -> None:
        """Keep the link up for ever: open, handshake, wait for loss, reopen with backoff. Safe to
        restart after a crash (a supervisor's restart drops whatever link was left)."""
        link, self._link = self._link, None
        if link is not None:
            link.close()
        self._connected.clear()
        await self._connect_loop()

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
        backoff, first, quiet = Backoff(BACKOFF_START_S, max(self._reconnect_max_s, BACKOFF_START_S), self._rng), True, False
        while True:
            try:
                link = await open_link(self._port, self._baudrate, self._on_data, self._on_lost,
                                       timeout_s=max(self._reply_timeout_s, 1.0))
            except (OSError, TimeoutError) as exc:
                if not quiet:
                    self._log.warning("vend_board_unavailable", error=str(exc))
                    quiet = True
                await asyncio.sleep(backoff.next())
                continue
            self._reader, self._seen, self.info = FrameReader(), (0, 0), None
            self._link = link
            self._lost.clear()
            if not first:
                self.counters["reconnects"] += 1
            first, quiet = False, False
            backoff.reset()
            await self._handshake_until_ok()
            await self._lost.wait()

    async def _handshake_until_ok(self) -> None:
        """HELLO until the board answers as a v2 board, backing off; give up only when the link goes."""
        backoff, logged = Backoff(BACKOFF_START_S, max(self._reconnect_max_s, BACKOFF_START_S), self._rng), None
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
                await asyncio.sleep(backoff.next())
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
        if reply.last_seq > MAX_CALLER_SEQ:
            raise ProtocolError(f"board reports last_seq {reply.last_seq:#x}, outside 0..{MAX_CALLER_SEQ:#x}")
        self.info = BoardInfo(version=reply.version, boot=reply.boot, memory=reply.memory, firmware=reply.firmware,
                              last_seq=reply.last_seq)
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
            try:
                await self._hello()
            except ProtocolError as exc:  # the rebooted board answers, but not as the protocol says
                self.incompatible = f"handshake failed after a reset: {exc}"
                self._log.error("vend_board_incompatible", reason=self.incompatible)
                raise
            self.incompatible = None
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

    async def _exchange(self, msg: Frame, *, not_across_reset: bool = False) -> tuple[Frame, int]:
        """Send and await the reply with the same seq; resend the SAME frame on timeout/bad_frame.

        A reply that came in during the loop turn the timeout fired in (the loop was held up past the
        deadline with the bytes already read) is taken, not thrown away and asked again; so is one the
        reader held back behind a partial frame (line noise: a stray SOF and length), read when the
        partial is dropped before a resend, and a new boot id read there stops the resend.
        ``not_across_reset``: once a frame from a newer boot than the one ``msg`` is addressed to has
        been seen, stop resending and raise ``BoardRebooted`` (a VEND: the outcome is then settled
        with VEND_RESULT). Returns the reply and how many copies were sent.
        """
        seq, last_nak, copies = msg.seq, None, 0
        if seq in self._waiters:
            raise ValueError(f"seq {seq} already in flight")
        for attempt in range(self._retries + 1):
            fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._waiters[seq] = fut
            try:
                if attempt:
                    # a partial frame that waited a whole timeout is noise (a stray SOF and length): the
                    # frames it held back are read first, with this seq's waiter in place. The reply may
                    # be among them, or a frame from a new boot, and neither may be answered by a resend
                    self._handle(self._reader.drop_partial())
                if not fut.done():
                    if attempt and not_across_reset and msg.boot != self._boot:
                        raise BoardRebooted(f"board rebooted (boot {msg.boot:#x} -> {self._boot:#x}) before it "
                                            f"answered {type(msg).__name__} seq={seq}; not sent again")
                    if attempt:
                        self.counters["retries"] += 1
                    self._send(msg)
                    copies += 1
                async with asyncio.timeout(self._reply_timeout_s):
                    reply = await fut
            except TimeoutError:
                if not fut.done() or fut.cancelled():
                    self.counters["timeouts"] += 1
                    continue
                reply = fut.result()  # set in the same loop turn as the deadline: a reply all the same
            finally:
                if self._waiters.get(seq) is fut:
                    del self._waiters[seq]
            if isinstance(reply, Nak) and reply.error == ErrorCode.BAD_FRAME:
                last_nak = reply
                continue
            return reply, copies
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

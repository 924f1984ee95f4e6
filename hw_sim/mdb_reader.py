"""A simulated MDB cashless reader behind a simulated Qibixx adapter, on a pty (the adapter's wire).

The host side sees exactly what a Qibixx MDB-USB / Pi Hat in Generic Master mode gives it: ASCII
lines ``R,<cmd>[,<data>]`` in, ``p,ACK`` / ``p,NACK`` / ``p,<hex>`` out. Behind it a cashless device
(MDB Level 1, optionally Level 3 with "always idle") keeps its MDB state, answers POLL with one
queued response at a time, and keeps the money books a test checks: every approval ends in exactly
one capture (VEND SUCCESS), refund (VEND FAILURE) or void (the reader reset before either).

Scripted behaviour: ``tap(funds)`` (a card presented), ``script(decision, ...)`` for the next vend
requests ('approve', 'deny', 'timeout' = never decides), ``approve_delay_s`` (slow approval),
``silence(n)`` (n lines answered p,NACK: the reader is mute on the bus), ``slow_answers`` (late
answers, still in order), ``unplug()``/``replug()`` (the adapter's cable; the
reader keeps its state), ``reset_now()`` (the
reader reboots: JUST RESET, open authorisations voided), ``reset_after_approval_s`` (a reboot that
long after the VMC polled the approval, i.e. while the motor runs).
Imports only the driver's pure codec (see ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from drivers.errors import ProtocolError
from drivers.mdb import codec
from drivers.mdb.codec import (
    BeginSession,
    Cmd,
    Command,
    OutOfSequence,
    PeripheralId,
    PeripheralReply,
    ReaderConfig,
    Resp,
    Response,
    Simple,
    Sub,
    VendApproved,
)
from hw_sim.serial_link import Peer, PtyPort
from hw_sim.threaded import LoopThread

log = structlog.get_logger(__name__)

FIRMWARE = "sim-qibixx-mdb-4.2"
COUNTRY_EUR = 0x1978  # ISO 4217 numeric 978, with the leading 1 MDB uses for ISO codes


class State(enum.Enum):
    INACTIVE = "inactive"
    DISABLED = "disabled"
    ENABLED = "enabled"
    SESSION_IDLE = "session_idle"
    VEND = "vend"


@dataclass
class Books:
    """The reader's money: what it approved and how each approval ended (scaled amounts)."""

    approved: list[tuple[int, int]] = field(default_factory=list)  # (item, amount)
    captured: list[tuple[int, int]] = field(default_factory=list)
    refunded: list[tuple[int, int]] = field(default_factory=list)
    voided: list[tuple[int, int]] = field(default_factory=list)
    denied: int = 0
    cash_sales: list[tuple[int, int]] = field(default_factory=list)

    @property
    def open(self) -> int:
        """Approvals not yet settled one way or another."""
        return len(self.approved) - len(self.captured) - len(self.refunded) - len(self.voided)


class SimMdbReader:
    """The reader and its adapter. ``scale``/``decimals`` are what SETUP reports (1 and 2: cents)."""

    def __init__(
        self,
        *,
        level: int = 1,
        always_idle: bool = False,
        scale: int = 1,
        decimals: int = 2,
        approve_delay_s: float = 0.05,
        max_response_s: int = 30,
    ) -> None:
        self.level = level
        self.offers_always_idle = always_idle and level >= 3
        self.scale, self.decimals = scale, decimals
        self.approve_delay_s = approve_delay_s
        self.max_response_s = max_response_s
        self.reset_after_approval_s: float | None = None
        self.state = State.INACTIVE
        self.books = Books()
        self.always_idle = False
        self.lines_in = 0
        self.log: collections.deque[str] = collections.deque(maxlen=200)  # the host lines, for tests
        self._vmc_level = 1
        self._pending: collections.deque[Response] = collections.deque([Simple(Resp.JUST_RESET)])
        self._script: collections.deque[str] = collections.deque()
        self._silence = 0
        self._slow: collections.deque[float] = collections.deque()
        self._answer_at = 0.0
        self._vend: tuple[int, int] | None = None  # (item, amount) of the vend request in progress
        self._approved: tuple[int, int] | None = None  # set once approved, until settled
        self._funds = 0xFFFF
        self._timer: asyncio.TimerHandle | None = None
        self._reader = codec.LineReader()
        self._pty: PtyPort | None = None

    # ---- serving -----------------------------------------------------------------------------

    async def serve_pty(self, link_path: str) -> str:
        self._pty = PtyPort(link_path, self._on_data)
        return self._pty.open()

    async def stop(self) -> None:
        self._cancel_timer()
        if self._pty is not None:
            self._pty.close()

    async def unplug(self) -> None:
        """Pull the adapter's USB cable: the tty vanishes; the reader on the MDB side keeps its state
        (a session, an approval) as a real one powered by the machine does."""
        if self._pty is not None:
            self._pty.close()
        self._reader = codec.LineReader()
        log.info("sim_mdb_adapter_unplugged", state=self.state.value)

    async def replug(self) -> None:
        """Plug it back in: a new tty behind the same link path (master mode must be started again)."""
        if self._pty is not None:
            self._pty = PtyPort(self._pty.link_path, self._on_data)
            self._pty.open()
        log.info("sim_mdb_adapter_replugged")

    def _on_data(self, peer: Peer, data: bytes) -> None:
        for line in self._reader.feed(data):
            self.lines_in += 1
            self.log.append(line)
            answer = self._answer(line)
            loop = asyncio.get_running_loop()
            # the adapter answers in order: a slow answer holds back the ones behind it
            at = max(loop.time(), self._answer_at) + (self._slow.popleft() if self._slow else 0.0)
            self._answer_at = at
            if at <= loop.time():
                peer.write(answer)
            else:
                loop.call_at(at, peer.write, answer)

    def _answer(self, line: str) -> bytes:
        if line == "V":
            return f"v,{FIRMWARE}\n".encode()
        if line in ("M,1", "M,0"):
            return b"m,ACK\n"
        if line == "R,RESET":
            self._power_cycle()
            return b"r,ACK\n"
        try:
            command = codec.decode_command(line)
        except ProtocolError:
            return b"x,ERR\n"
        if self._silence > 0:
            self._silence -= 1
            return codec.encode_reply(PeripheralReply(nack=True))
        if command.cmd & 0xF8 != codec.ADDRESS:
            return codec.encode_reply(PeripheralReply(nack=True))  # nobody at that address
        reply = self._command(command)
        if reply is None:
            return codec.encode_reply(PeripheralReply(ack=True))
        return codec.encode_reply(PeripheralReply(data=codec.encode_response(reply, self._level)))

    @property
    def _level(self) -> int:
        return min(self.level, self._vmc_level)

    # ---- the cashless device -----------------------------------------------------------------

    def _command(self, c: Command) -> Response | None:
        sub = c.data[0] if c.data else None
        handler = {
            Cmd.RESET: self._reset,
            Cmd.POLL: self._poll,
            Cmd.SETUP: self._setup,
            Cmd.EXPANSION: self._expansion,
            Cmd.READER: self._reader_cmd,
            Cmd.VEND: self._vend_cmd,
        }.get(Cmd(c.cmd))
        if handler is None:
            return OutOfSequence()
        return handler(sub, c.data[1:])

    def _reset(self, _sub: int | None, _data: bytes) -> Response | None:
        self._power_cycle()
        return None

    def _power_cycle(self) -> None:
        """Reset (MDB RESET or a reboot): whatever was approved and not settled is voided."""
        self._cancel_timer()
        if self._approved is not None:
            self.books.voided.append(self._approved)
        self._vend = self._approved = None
        self._pending.clear()
        self._pending.append(Simple(Resp.JUST_RESET))
        self.state = State.INACTIVE
        self.always_idle = False

    def _poll(self, _sub: int | None, _data: bytes) -> Response | None:
        resp = self._pending.popleft() if self._pending else None
        if isinstance(resp, VendApproved) and self.reset_after_approval_s is not None:
            self._later(self.reset_after_approval_s, self.reset_now)  # counted from the VMC hearing it
        return resp

    def _setup(self, sub: int | None, data: bytes) -> Response | None:
        if sub == Sub.SETUP_CONFIG and data:
            self._vmc_level = max(1, min(3, data[0]))
            if self.state is State.INACTIVE:
                self.state = State.DISABLED
            return ReaderConfig(self.level, COUNTRY_EUR, self.scale, self.decimals, self.max_response_s, 0)
        if sub == Sub.SETUP_PRICES:
            return None
        return OutOfSequence()

    def _expansion(self, sub: int | None, data: bytes) -> Response | None:
        if sub == Sub.EXPANSION_ID:
            features = codec.FEATURE_ALWAYS_IDLE if self.offers_always_idle else 0
            return PeripheralId("SIM", "000000000042", "sim-reader", 0x0102, features)
        if sub == Sub.EXPANSION_FEATURES and self._level >= 3 and len(data) == 4:
            self.always_idle = self.offers_always_idle and bool(
                int.from_bytes(data, "big") & codec.FEATURE_ALWAYS_IDLE
            )
            return None
        return OutOfSequence()

    def _reader_cmd(self, sub: int | None, _data: bytes) -> Response | None:
        if self.state is State.INACTIVE:
            return OutOfSequence()
        if sub == Sub.READER_ENABLE:
            if self.state is State.DISABLED:
                self.state = State.ENABLED
            return None
        if sub == Sub.READER_DISABLE and self.state in (State.ENABLED, State.DISABLED):
            self.state = State.DISABLED
            return None
        return OutOfSequence()

    def _vend_cmd(self, sub: int | None, data: bytes) -> Response | None:
        if sub == Sub.VEND_REQUEST and len(data) == 4:
            return self._vend_request(int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big"))
        if sub == Sub.VEND_CANCEL and self.state is State.VEND:
            if self._approved is None:  # not decided yet: deny now
                self._cancel_timer()
                self._deny()
            return None  # already approved: the approval stands, the VMC must send VEND FAILURE
        if sub in (Sub.VEND_SUCCESS, Sub.VEND_FAILURE) and self.state is State.VEND and self._approved:
            (self.books.captured if sub == Sub.VEND_SUCCESS else self.books.refunded).append(self._approved)
            self._cancel_timer()
            self._vend = self._approved = None
            self.state = State.SESSION_IDLE
            return None
        if (
            sub == Sub.SESSION_COMPLETE
            and self.state in (State.SESSION_IDLE, State.VEND)
            and not self._approved
        ):
            self._cancel_timer()
            self._vend = None
            self.state = State.ENABLED
            self._pending.append(Simple(Resp.END_SESSION))
            return None
        if sub == Sub.CASH_SALE and len(data) == 4 and self.state is not State.INACTIVE:
            self.books.cash_sales.append((int.from_bytes(data[2:], "big"), int.from_bytes(data[:2], "big")))
            return None
        return OutOfSequence()

    def _vend_request(self, price: int, item: int) -> Response | None:
        session = self.state is State.SESSION_IDLE
        idle_ok = self.state is State.ENABLED and self.always_idle
        if not (session or idle_ok):
            return OutOfSequence()
        self.state = State.VEND
        self._vend = (item, price)
        decision = self._script.popleft() if self._script else "approve"
        if decision == "timeout":
            return None
        if decision == "deny" or (self._funds != 0xFFFF and price > self._funds):
            self._later(self.approve_delay_s, self._deny)
        else:
            self._later(self.approve_delay_s, self._approve)
        return None

    def _approve(self) -> None:
        if self.state is not State.VEND or self._vend is None:
            return
        self._approved = self._vend
        self.books.approved.append(self._vend)
        self._pending.append(VendApproved(self._vend[1]))

    def _deny(self) -> None:
        if self.state is not State.VEND:
            return
        self.books.denied += 1
        self._vend = None
        self.state = State.SESSION_IDLE
        self._pending.append(Simple(Resp.VEND_DENIED))

    def _later(self, delay_s: float, fn: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay_s, fn)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- the scripted customer and faults ----------------------------------------------------

    def tap(self, funds: int = 0xFFFF) -> bool:
        """A card presented: BEGIN SESSION if the reader is enabled and idle. False otherwise."""
        if self.state is not State.ENABLED:
            return False
        self._funds = funds
        self.state = State.SESSION_IDLE
        self._pending.append(BeginSession(funds))
        return True

    def cancel_session(self) -> bool:
        """The customer presses cancel on the reader: SESSION CANCEL REQUEST (only outside a vend)."""
        if self.state is not State.SESSION_IDLE:
            return False
        self._pending.append(Simple(Resp.SESSION_CANCEL_REQUEST))
        return True

    def script(self, *decisions: str) -> None:
        """The next vend requests' outcomes: 'approve', 'deny' or 'timeout' (never decides)."""
        for d in decisions:
            if d not in ("approve", "deny", "timeout"):
                raise ValueError(f"unknown decision {d!r}")
            self._script.append(d)

    def silence(self, lines: int) -> None:
        """The reader stops answering for ``lines`` host lines (the adapter says p,NACK)."""
        self._silence = lines

    def slow_answers(self, *delays_s: float) -> None:
        """The next answers come this late (a slow peripheral behind the adapter's response timeout)."""
        self._slow.extend(delays_s)

    def reset_now(self) -> None:
        """The reader reboots (power glitch, watchdog): JUST RESET on the next POLL."""
        log.info("sim_mdb_reader_reset", state=self.state.value, approved=self._approved)
        self._power_cycle()


class MdbReaderThread(LoopThread):
    """A SimMdbReader on a pty, in its own thread and loop (beside a daemon subprocess)."""

    name = "sim.mdb_reader"

    def __init__(self, sim: SimMdbReader, link_path: str) -> None:
        self.sim = sim
        self.link_path = link_path
        super().__init__()

    async def _serve(self) -> None:
        await self.sim.serve_pty(self.link_path)

    async def _close(self) -> None:
        await self.sim.stop()

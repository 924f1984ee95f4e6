"""The MDB reader's link (see reader.py): the adapter connection with its reconnect task, Generic
Master mode, a steady POLL, one request line in flight under the bus lock, and every response
tracked into the reader's state and an inbox that waiting commands read. See docs/protocols/mdb.md.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import random
from collections.abc import Callable

import structlog

from drivers.backoff import open_with_backoff
from drivers.errors import DeviceDisconnected, DeviceError, DeviceFault, DeviceTimeout, ProtocolError
from drivers.mdb import codec
from drivers.mdb.codec import (
    AdapterLine,
    BeginSession,
    Command,
    Malfunction,
    OutOfSequence,
    PeripheralId,
    PeripheralReply,
    ReaderConfig,
    Resp,
    Response,
    Simple,
)
from drivers.vend_board.transport import Link, open_link

log = structlog.get_logger(__name__)

INBOX_LEN = 32


class ReaderState(enum.Enum):
    """The reader's MDB cashless state as the VMC last saw it (plus ``offline``: no answers)."""

    OFFLINE = "offline"
    INACTIVE = "inactive"
    DISABLED = "disabled"
    ENABLED = "enabled"
    SESSION_IDLE = "session_idle"
    VEND = "vend"


class ReaderReset(DeviceFault):
    """The reader answered JUST RESET: it restarted and every session it held is gone (nothing captured)."""


class ReaderLink:
    """The link to one reader: adapter connection, steady POLL, one line in flight, the inbox of responses.

    ``CashlessReader`` (reader.py) adds the commands; this class knows lines and states, not sales."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        reply_timeout_s: float = 1.5,
        poll_interval_s: float = 0.05,
        retries: int = 2,
        reconnect_max_s: float = 5.0,
        vmc_level: int = 3,
        silent_polls: int = 20,
        vmc_id: tuple[str, str, str, int] = ("VED", "000000000001", "vendedge", 1),
    ) -> None:
        self._port = port
        self._baudrate = baudrate
        self._reply_timeout_s = reply_timeout_s
        self._poll_interval_s = poll_interval_s
        self._retries = retries
        self._reconnect_max_s = reconnect_max_s
        self._vmc_level = vmc_level
        self._silent_limit = silent_polls
        self._vmc_id = vmc_id
        self.state = ReaderState.OFFLINE
        self.last_error = ""
        self.config: ReaderConfig | None = None
        self.peripheral: PeripheralId | None = None
        self.level = 1
        self.always_idle = False
        self.counters: dict[str, int] = dict.fromkeys(
            ("lines_sent", "lines_received", "polls", "no_answer", "timeouts", "retries", "resets_seen",
             "garbage_bytes", "protocol_errors", "late_replies", "poll_errors", "reconnects", "disconnects",
             "malfunctions"), 0)
        self.on_state: Callable[[ReaderState, str], None] | None = None  # (state, last_error) for the UI
        self._reader = codec.LineReader()
        self._link: Link | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._bus = asyncio.Lock()
        self._reply: asyncio.Future[PeripheralReply] | None = None
        self._inbox: collections.deque[Response] = collections.deque(maxlen=INBOX_LEN)
        self._news = asyncio.Event()
        self._silent = 0
        self._resetting = False  # our own RESET is in flight: its JUST RESET is no error
        self._stale_until = 0.0  # loop time before which a late answer may still arrive
        self._master: asyncio.Future[AdapterLine] | None = None
        self.master_on = False  # the adapter confirmed Generic Master mode on this connection
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self._log = log.bind(device="mdb_reader", port=port)

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def ready(self) -> bool:
        """Initialised and enabled (or in a session): a sale may start."""
        return self.state in (ReaderState.ENABLED, ReaderState.SESSION_IDLE)

    async def start(self) -> None:
        """Start the reconnect and poll tasks; returns at once, even when the adapter is absent."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._connect_loop(), name="mdb.reconnect"),
                asyncio.create_task(self._poll_loop(), name="mdb.poll"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        link, self._link = self._link, None
        if link is not None:
            link.close()
        self._connected.clear()
        self._fail_pending(DeviceDisconnected("mdb driver stopped"))
        self._set_state(ReaderState.OFFLINE)

    async def wait_connected(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError as exc:
            raise DeviceDisconnected(f"mdb adapter {self._port} not connected after {timeout_s}s") from exc

    async def _connect_loop(self) -> None:
        first = True
        while True:
            link = await open_with_backoff(
                lambda: open_link(
                    self._port,
                    self._baudrate,
                    self._on_data,
                    self._on_lost,
                    timeout_s=max(self._reply_timeout_s, 1.0),
                ),
                log=self._log,
                event="mdb_adapter_unavailable",
                max_s=self._reconnect_max_s,
                rng=self._rng,
            )
            self._reader = codec.LineReader()
            self._link = link
            if not first:
                self.counters["reconnects"] += 1
            self._log.info("mdb_adapter_connected", reconnect=not first)
            first = False
            self._lost.clear()
            self.master_on = False
            self._connected.set()
            try:
                async with self._bus:
                    await self._start_master()
            except DeviceError as exc:  # set-up tries again; meanwhile nothing is polled
                self._log.warning("mdb_master_mode_failed", error=str(exc))
            await self._lost.wait()

    def _on_lost(self, exc: Exception | None) -> None:
        self._link = None
        self._connected.clear()
        self.counters["disconnects"] += 1
        self._log.warning("mdb_adapter_disconnected", error=str(exc) if exc else "eof")
        self._fail_pending(DeviceDisconnected(f"mdb adapter link {self._port} lost"))
        self.last_error = "adapter disconnected"
        self._set_state(ReaderState.OFFLINE)
        self._lost.set()

    def _fail_pending(self, exc: Exception) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(exc)
        self._news.set()

    def _set_state(self, state: ReaderState) -> None:
        if state is not self.state:
            self._log.info("mdb_reader_state", state=state.value, was=self.state.value)
            self.state = state
            if self.on_state is not None:
                self.on_state(state, self.last_error)

    # ---- lines in / out ----------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        before = self._reader.garbage_bytes
        lines = self._reader.feed(data)
        self.counters["garbage_bytes"] += self._reader.garbage_bytes - before
        for line in lines:
            self.counters["lines_received"] += 1
            try:
                reply = codec.decode_line(line)
            except ProtocolError:
                self.counters["protocol_errors"] += 1
                continue
            if isinstance(reply, AdapterLine):
                if reply.prefix == "m" and self._master is not None and not self._master.done():
                    self._master.set_result(reply)
                continue  # other adapter lines (v,..., notices) carry nothing the VMC role needs
            if isinstance(reply, PeripheralReply):
                if self._reply is not None and not self._reply.done():
                    self._reply.set_result(reply)
                else:
                    self.counters["late_replies"] += (
                        1  # its request timed out already: never paired with another
                    )

    async def _start_master(self) -> None:
        """``M,1``: the adapter's Generic Master mode (volatile: sent after every connect and before set-up)."""
        link = self._link
        if link is None:
            raise DeviceDisconnected(f"mdb adapter {self._port} not connected")
        fut: asyncio.Future[AdapterLine] = asyncio.get_running_loop().create_future()
        self._master = fut
        try:
            link.write(codec.encode_line("M,1"))
            self.counters["lines_sent"] += 1
            async with asyncio.timeout(self._reply_timeout_s):
                answer = await fut
        except TimeoutError as exc:
            raise DeviceTimeout("the adapter did not answer M,1") from exc
        finally:
            self._master = None
        if answer.fields != ("ACK",):
            raise ProtocolError(f"the adapter refused master mode: m,{','.join(answer.fields)}")
        self.master_on = True

    async def _exchange(self, command: Command, *, retry: bool) -> list[Response]:
        """One request line and its ``p,`` answer (decoded; ``[]`` for a bare ACK), under the bus lock
        held by the caller. ``retry``: resend on no answer (only commands safe to repeat, see the doc)."""
        link = self._link
        for attempt in range(self._retries + 1 if retry else 1):
            if attempt:
                self.counters["retries"] += 1
            # lines carry no request id: after a timeout, let a late answer arrive (and be dropped) first
            await asyncio.sleep(max(0.0, self._stale_until - asyncio.get_running_loop().time()))
            if link is None or self._link is not link:
                raise DeviceDisconnected(f"mdb adapter {self._port} not connected")
            fut: asyncio.Future[PeripheralReply] = asyncio.get_running_loop().create_future()
            self._reply = fut
            try:
                link.write(codec.encode_command(command))
                self.counters["lines_sent"] += 1
                async with asyncio.timeout(self._reply_timeout_s):
                    reply = await fut
            except TimeoutError:
                if not fut.done() or fut.cancelled():
                    self.counters["timeouts"] += 1
                    self._stale_until = asyncio.get_running_loop().time() + self._reply_timeout_s
                    continue
                reply = fut.result()  # read in the same loop turn as the deadline: an answer all the same
            finally:
                self._reply = None
            if reply.nack:
                self.counters["no_answer"] += 1
                continue
            self._silent = 0
            return self._absorb(reply.data) if reply.data else []
        raise DeviceTimeout(f"no answer from the reader to {command.name}")

    def _absorb(self, data: bytes) -> list[Response]:
        try:
            responses = codec.decode_responses(data, self.level)
        except ProtocolError as exc:
            self.counters["protocol_errors"] += 1
            self._log.warning("mdb_bad_response", error=str(exc))
            return []
        for resp in responses:
            if not isinstance(resp, OutOfSequence):  # an answer to this command, never news for a waiter
                self._on_response(resp)
        return responses

    def _on_response(self, resp: Response) -> None:
        """Track the reader's state from what it says; queue it for whoever waits."""
        if isinstance(resp, Simple):
            code = resp.code
            if code is Resp.JUST_RESET:
                self.counters["resets_seen"] += 1
                if not self._resetting and self.state not in (ReaderState.OFFLINE, ReaderState.INACTIVE):
                    # not our RESET and not its power-up: the reader restarted by itself
                    self.last_error = f"reader reset by itself (was {self.state.value})"
                self._set_state(ReaderState.INACTIVE)
            elif code is Resp.END_SESSION or code is Resp.CANCELLED:
                self._set_state(ReaderState.ENABLED)
            elif code is Resp.VEND_DENIED:
                self._set_state(ReaderState.SESSION_IDLE)
        elif isinstance(resp, ReaderConfig):
            self.config = resp
            self.level = min(self._vmc_level, resp.level)
        elif isinstance(resp, PeripheralId):
            self.peripheral = resp
        elif isinstance(resp, BeginSession):
            self._set_state(ReaderState.SESSION_IDLE)
        elif isinstance(resp, Malfunction):
            self.counters["malfunctions"] += 1
            self.last_error = f"reader malfunction 0x{resp.error:02X}"
            self._log.warning("mdb_reader_malfunction", error=resp.error)
        self._inbox.append(resp)
        self._news.set()

    async def _command(self, command: Command, *, retry: bool = False) -> list[Response]:
        async with self._bus:
            return await self._exchange(command, retry=retry)

    # ---- polling -----------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            await self._connected.wait()
            if not self.master_on:
                await asyncio.sleep(self._poll_interval_s)
                continue
            try:
                async with self._bus:
                    self.counters["polls"] += 1
                    await self._exchange(codec.poll(), retry=False)
            except DeviceTimeout:
                self._silent += 1
                if self._silent >= self._silent_limit and self.state is not ReaderState.OFFLINE:
                    self.last_error = f"reader silent for {self._silent} polls"
                    self._set_state(ReaderState.OFFLINE)
            except DeviceDisconnected:
                pass  # the reconnect task handles it
            except (
                Exception
            ):  # a bug must not stop the polling (the reader would look alive but never be heard)
                self.counters["poll_errors"] += 1
                self._log.exception("mdb_poll_failed")
            try:
                await self._after_poll()
            except DeviceError as exc:
                self._log.warning("mdb_session_cancel_failed", error=str(exc))
            await asyncio.sleep(self._poll_interval_s)

    async def _after_poll(self) -> None:
        """A customer's cancel outside any vend: end the session as the reader asks."""
        cancel = [r for r in self._inbox if isinstance(r, Simple) and r.code is Resp.SESSION_CANCEL_REQUEST]
        if cancel and self.state is ReaderState.SESSION_IDLE:
            for r in cancel:
                self._inbox.remove(r)
            await self._command(codec.session_complete(), retry=True)

    async def _take(
        self,
        kinds: tuple[type, ...],
        timeout_s: float,
        *,
        codes: tuple[Resp, ...] = (),
        reset_ok: bool = False,
    ) -> Response:
        """The oldest inbox response of ``kinds`` (or Simple with ``codes``); JUST RESET raises ReaderReset."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for resp in list(self._inbox):
                        if isinstance(resp, Simple):
                            if resp.code is Resp.JUST_RESET and not reset_ok:
                                self._inbox.remove(resp)
                                raise ReaderReset("the reader reset itself (JUST RESET)")
                            wanted = resp.code in codes
                        else:
                            wanted = isinstance(resp, kinds)
                        if wanted:
                            self._inbox.remove(resp)
                            return resp
                    if not self.connected and self._tasks:
                        raise DeviceDisconnected(f"mdb adapter {self._port} not connected")
                    self._news.clear()
                    await self._news.wait()
        except TimeoutError as exc:
            self.counters["timeouts"] += 1
            raise DeviceTimeout(
                f"reader did not send {[k.__name__ for k in kinds] or [c.name for c in codes]}"
                f" within {timeout_s}s"
            ) from exc

    def _discard(self, stale: Callable[[Response], bool]) -> None:
        for r in [r for r in self._inbox if stale(r)]:
            self._inbox.remove(r)

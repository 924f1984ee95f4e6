"""The byte transports of the vend board and the MDB adapter: the serial one on a real socat pty pair (writes
never block the loop, even when nobody reads the far end, and the port is held exclusively) and the TCP one
against a real loopback server (a peer that stops reading loses the link within the write deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import time
import tty
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from drivers.errors import DeviceDisconnected, DeviceTimeout
from drivers.mdb import CashlessReader
from drivers.vend_board import VendBoard, VendOutcome
from drivers.vend_board.transport import WRITE_DEADLINE_S, PortInUse, SerialLink, TcpLink, open_link
from hw_sim.vend_board import SimVendBoard
from tests.support.socat import socat_pair
from tests.support.waits import wait_for

pytestmark = [pytest.mark.timeout(30), pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat")]

CHUNK = 4096
MAX_FILL = 16 * 1024 * 1024  # far more than socat and two pty buffers hold


@pytest.fixture
def pair(tmp_path) -> Iterator[tuple[str, str]]:
    with socat_pair(tmp_path) as ends:
        yield ends


@pytest.fixture
def far_end(pair) -> Iterator[int]:
    """The other tty, open and never read (until a test reads it): its buffer fills up."""
    fd = os.open(pair[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    yield fd
    os.close(fd)


class Lag:
    """A ticker on the loop: the worst delay of a 5 ms sleep is how long the loop was blocked."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - t - 0.005)

    async def __aenter__(self) -> Lag:
        self._task = asyncio.create_task(self._tick(), name="test.lag_ticker")
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Lost:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.exc: Exception | None = None

    def __call__(self, exc: Exception | None) -> None:
        self.exc = exc
        self.event.set()


@contextlib.asynccontextmanager
async def serial_link(path: str, lost: Lost | None = None) -> AsyncIterator[SerialLink]:
    link = await open_link(path, 57600, lambda _b: None, lost or Lost())
    assert isinstance(link, SerialLink)
    try:
        yield link
    finally:
        link.close()


async def _fill(link: SerialLink) -> tuple[int, float]:
    """Write until the tty refuses bytes (they wait in the link); returns (bytes written, longest write)."""
    written, longest = 0, 0.0
    while link.pending == 0:
        assert written < MAX_FILL, "the far end took everything: nothing was ever refused"
        t = time.perf_counter()
        link.write(bytes([written // CHUNK % 251]) * CHUNK)
        longest = max(longest, time.perf_counter() - t)
        written += CHUNK
        await asyncio.sleep(0)
    return written, longest


async def _saturate(link: SerialLink | TcpLink, lost: Lost, chunk: int = CHUNK) -> tuple[int, float]:
    """Keep the tty's (or socket's) buffers full (a chunk whenever less than one waits) until the link is lost."""
    written, longest = 0, 0.0
    while not lost.event.is_set():
        assert written < MAX_FILL, "the far end took everything: the write never stalled"
        if link.pending < CHUNK:
            t = time.perf_counter()
            link.write(bytes(chunk))
            longest = max(longest, time.perf_counter() - t)
            written += chunk
        await asyncio.sleep(0.001)
    return written, longest


async def test_a_far_end_that_never_reads_does_not_stall_the_loop(pair, far_end) -> None:
    lost = Lost()
    async with Lag() as lag, serial_link(pair[0], lost) as link:
        async with asyncio.timeout(10.0):
            written, longest = await _saturate(link, lost)  # ends when nothing was taken for the deadline
    assert isinstance(lost.exc, DeviceTimeout) and "stalled" in str(lost.exc)
    assert written > CHUNK
    assert longest < 0.05, f"a write call took {longest * 1000:.1f} ms"
    assert lag.worst < 0.15, f"the loop was blocked for {lag.worst * 1000:.0f} ms"  # pyserial's write: 200 ms
    with pytest.raises(DeviceDisconnected):
        link.write(b"x")


async def test_bytes_refused_at_first_arrive_in_order_once_the_far_end_reads(pair, far_end) -> None:
    lost = Lost()
    loop = asyncio.get_running_loop()
    received = bytearray()
    async with serial_link(pair[0], lost) as link:
        written, _ = await _fill(link)
        tail = bytes(range(256)) * 4
        link.write(tail)
        written += len(tail)
        loop.add_reader(far_end, lambda: received.extend(os.read(far_end, 65536)))
        try:
            await wait_for(lambda: len(received) >= written, 10.0, what="every byte at the far end")
        finally:
            loop.remove_reader(far_end)
        assert link.pending == 0 and not lost.event.is_set()
    expected = b"".join(bytes([i % 251]) * CHUNK for i in range((written - len(tail)) // CHUNK)) + tail
    assert bytes(received) == expected


async def test_a_second_open_of_the_same_port_fails_cleanly(pair) -> None:
    async with serial_link(pair[0]):
        with pytest.raises(PortInUse) as refused:
            await open_link(pair[0], 57600, lambda _b: None, Lost())
        assert isinstance(refused.value, DeviceDisconnected) and isinstance(refused.value, OSError)
        assert pair[0] in str(refused.value) and "in use" in str(refused.value)
    async with serial_link(pair[0]) as again:  # closing released the lock
        again.write(b"ok")


async def test_the_vend_board_waits_for_a_port_held_elsewhere_and_logs_it(tmp_path) -> None:
    sim = SimVendBoard({"A1": 3}, speed=100.0, seed=1)
    url = await sim.serve_pty(str(tmp_path / "ttyVEND0"))
    board = VendBoard(url, reply_timeout_s=0.1, reconnect_max_s=0.05)
    try:
        with structlog.testing.capture_logs() as logs:
            async with serial_link(url):
                await board.start()
                await wait_for(lambda: len([e for e in logs if e["event"] == "vend_board_unavailable"]) >= 1,
                               5.0, what="the busy port logged")
                assert not board.connected
            await board.wait_connected(5.0)  # the holder let go: the next try opens it
        busy = [e for e in logs if e["event"] == "vend_board_unavailable"]
        assert len(busy) == 1 and "in use" in busy[0]["error"]
        assert (await board.vend("A1", seq=1)).outcome is VendOutcome.OK
        assert sim.dispensed["A1"] == 1
    finally:
        await board.stop()
        await sim.stop()


async def test_the_mdb_reader_waits_for_a_port_held_elsewhere_and_logs_it(pair) -> None:
    reader = CashlessReader(pair[0], reconnect_max_s=0.05)
    try:
        with structlog.testing.capture_logs() as logs:
            async with serial_link(pair[0]):
                await reader.start()
                await wait_for(lambda: any(e["event"] == "mdb_adapter_unavailable" for e in logs), 5.0,
                               what="the busy port logged")
                assert not reader.connected
            await reader.wait_connected(5.0)
        busy = [e for e in logs if e["event"] == "mdb_adapter_unavailable"]
        assert len(busy) == 1 and "in use" in busy[0]["error"]
    finally:
        await reader.stop()


@contextlib.asynccontextmanager
async def tcp_peer(*, reads: bool) -> AsyncIterator[tuple[str, bytearray]]:
    """A real TCP server on loopback. ``reads=False`` accepts and never reads (a wedged serial-to-Ethernet
    bridge: the kernel's buffers fill, then its window stays shut); ``reads=True`` reads slowly (a 64 KiB
    receive buffer read every 20 ms), so a bulk write waits far longer than the write deadline while
    bytes keep moving."""
    received = bytearray()
    accepted: list[asyncio.Transport] = []
    loop = asyncio.get_running_loop()

    class Peer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            accepted.append(transport)
            if not reads:
                transport.pause_reading()

        def data_received(self, data: bytes) -> None:
            received.extend(data)
            accepted[0].pause_reading()
            loop.call_later(0.02, lambda: accepted[0].is_closing() or accepted[0].resume_reading())

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before listen: the window follows it
    listener.bind(("127.0.0.1", 0))
    server = await loop.create_server(Peer, sock=listener)
    try:
        yield f"socket://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        for transport in accepted:
            transport.abort()
        server.close()
        await server.wait_closed()


async def test_a_tcp_peer_that_never_reads_loses_the_link_with_a_timeout() -> None:
    lost = Lost()
    async with tcp_peer(reads=False) as (url, _), Lag() as lag:
        link = await open_link(url, 57600, lambda _b: None, lost)
        assert isinstance(link, TcpLink)
        try:
            t0 = time.perf_counter()
            async with asyncio.timeout(10.0):
                written, longest = await _saturate(link, lost, chunk=16 * CHUNK)
            stalled_after = time.perf_counter() - t0
        finally:
            link.close()
        with pytest.raises(DeviceDisconnected):
            link.write(b"x")
    assert isinstance(lost.exc, DeviceTimeout), lost.exc
    found = re.fullmatch(rf"tcp write to {re.escape(url)} stalled: (\d+) bytes not taken in [0-9.]+ s", str(lost.exc))
    assert found and int(found[1]) > 0, str(lost.exc)
    assert written > 16 * CHUNK and stalled_after < 8.0
    assert longest < 0.05, f"a write call took {longest * 1000:.1f} ms"
    assert lag.worst < 0.15, f"the loop was blocked for {lag.worst * 1000:.0f} ms"


async def test_a_slow_reading_tcp_peer_gets_every_byte_and_keeps_the_link() -> None:
    lost = Lost()
    payload = bytes(range(256)) * 32768  # 8 MiB in one write: more than the kernel (<= 4 MiB here) takes at once
    waiting: list[float] = []  # when the link was last seen holding bytes the kernel had not taken

    def arrived() -> bool:
        if link.pending:
            waiting.append(time.perf_counter())
        return len(received) >= len(payload) or lost.event.is_set()

    async with tcp_peer(reads=True) as (url, received):
        link = await open_link(url, 57600, lambda _b: None, lost)
        assert isinstance(link, TcpLink)
        try:
            sock = link._transport.get_extra_info("socket")  # a half-open link with nothing to write: keepalive
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            t0 = time.perf_counter()
            link.write(payload)
            assert link.pending > 0
            await wait_for(arrived, 10.0, what="every byte at the peer")
            assert not lost.event.is_set(), lost.exc
            held = waiting[-1] - t0
            assert held > 2 * WRITE_DEADLINE_S, f"the kernel took it all in {held:.2f} s: the test was not slow"
            link.write(b"still open")
            await wait_for(lambda: received.endswith(b"still open"), 5.0, what="a write after the bulk")
        finally:
            link.close()
    assert bytes(received) == payload + b"still open" and link.pending == 0

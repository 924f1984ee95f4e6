"""Byte transports for the vend board and the MDB adapter: a tty (pyserial, exclusive, timeout=0,
reads and writes driven by the loop) or TCP.

A transport moves bytes and reports loss; it knows nothing about frames. ``open_link(url, ...)``
picks the class from a scheme-keyed table: ``socket://host:port`` -> TCP (an asyncio transport has a
real fd-based reader; a pyserial socket URL does not), anything else -> a tty path.

Both kinds share one write contract: ``write`` never blocks the loop, bytes the tty / kernel does not
take at once wait in the link, and when none is taken for ``write_deadline_s`` (``WRITE_DEADLINE_S``;
a far end that stopped reading, a wedged serial-to-Ethernet bridge) the link is closed and ``on_lost``
gets a ``DeviceTimeout`` naming the port or url and the bytes pending. A TCP link also turns on
keepalive (and TCP_USER_TIMEOUT), so a half-open connection is found in ~25 s even with nothing to write.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import sys
import termios
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import serial

from drivers.errors import DeviceDisconnected, DeviceTimeout

OnData = Callable[[bytes], None]
OnLost = Callable[[Exception | None], None]

WRITE_DEADLINE_S = 0.2  # no byte taken by the tty or TCP peer this long: link lost (as pyserial's write_timeout was)
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 10, 5, 3  # a silent half-open TCP link: lost in ~25 s
TCP_USER_TIMEOUT_MS = (KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_PROBES) * 1000  # data unacked as long


class Link(Protocol):
    """An open byte link; ``on_data``/``on_lost`` callbacks were given at open time."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class PortInUse(DeviceDisconnected, OSError):
    """Another process (or another link in this one) holds the tty's exclusive lock.

    An ``OSError`` like any port that is not there yet, so the reconnect loops retry it with backoff
    and log it once; its message names the port and the lock."""


class SerialLink:
    """A tty opened exclusively by pyserial with timeout=0; the loop drives both directions.

    Reads: ``loop.add_reader(fd)``. Writes never block the loop: what the tty does not take at once
    is kept and written by ``loop.add_writer(fd)``; when not a byte of it is taken for
    ``write_deadline_s`` (nobody reads the other end, a wedged adapter) the link counts as lost.
    """

    def __init__(self, port: str, baudrate: int, on_data: OnData, on_lost: OnLost,
                 *, write_deadline_s: float = WRITE_DEADLINE_S) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._port = port
        self._write_deadline_s = write_deadline_s
        try:
            # exclusive: flock(LOCK_EX | LOCK_NB), so a second daemon (or a stray tool) cannot
            # interleave bytes with ours on the same wire
            self._ser = serial.Serial(port, baudrate=baudrate, timeout=0, exclusive=True)
        except serial.SerialException as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise PortInUse(exc.errno, f"serial port {port} is in use by another program "
                                           "(its exclusive lock is held)") from exc
            raise
        self._fd: int | None = self._ser.fileno()
        os.set_blocking(self._fd, False)  # pyserial opens O_NONBLOCK; say so, writes depend on it
        self._out = bytearray()  # written by the loop when the tty takes it
        self._stall: asyncio.TimerHandle | None = None
        self._loop.add_reader(self._fd, self._readable)

    @property
    def pending(self) -> int:
        """Bytes accepted by ``write`` that the tty has not taken yet."""
        return len(self._out)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the other end of the pty / the USB adapter is gone
            self._lose(exc)
            return
        if not data:
            self._lose(None)
            return
        self._on_data(data)

    def write(self, data: bytes) -> None:
        """Queue a frame; it goes out now if the tty takes it, else as soon as the loop can write it."""
        if self._fd is None:
            raise DeviceDisconnected("serial link closed")
        if self._out:
            self._out += data  # behind what is already waiting: order kept
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lose(exc)
            raise DeviceDisconnected(f"serial write failed: {exc}") from exc
        if sent < len(data):
            self._out += data[sent:]
            self._loop.add_writer(self._fd, self._writable)
            self._arm_stall()

    def _writable(self) -> None:
        assert self._fd is not None
        try:
            sent = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self._out[:sent]
        if self._out:
            self._arm_stall()  # progress: the deadline counts from the last byte taken
            return
        self._loop.remove_writer(self._fd)
        self._disarm_stall()

    def _arm_stall(self) -> None:
        self._disarm_stall()
        self._stall = self._loop.call_later(self._write_deadline_s, self._stalled)

    def _disarm_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        self._lose(DeviceTimeout(f"serial write to {self._port} stalled: {len(self._out)} bytes not taken "
                                 f"in {self._write_deadline_s} s"))

    def _lose(self, exc: Exception | None) -> None:
        if self._fd is None:
            return
        self.close()
        self._on_lost(exc)

    def close(self) -> None:
        """Close the port (releasing its lock); bytes still waiting are dropped."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._disarm_stall()
            self._out.clear()
            self._fd = None
            try:
                self._ser.close()
            except (serial.SerialException, OSError):
                pass  # closing a vanished device fails; it is closed either way


class _TcpProtocol(asyncio.Protocol):
    """Bytes in, loss out, and the write stall deadline of a TCP link.

    The write-buffer limits are zero, so the transport pauses writing as soon as the kernel refuses a
    byte and resumes once it has taken them all: "paused" is what ``SerialLink``'s pending bytes are.
    A deadline period that ends paused with no byte taken by the peer aborts the transport (its buffer
    is dropped) and reports ``DeviceTimeout``. "Taken" counts the bytes the peer acknowledged (the
    kernel's send queue, SIOCOUTQ, is subtracted): the kernel frees room in a multi-megabyte send buffer
    only in large steps, so a slow but live reader would look stalled if only those steps counted.
    asyncio reports no per-write progress, so progress is checked at the end of each period: the link
    is lost after one to two deadlines of nothing taken.
    """

    def __init__(self, url: str, on_data: OnData, on_lost: OnLost, write_deadline_s: float) -> None:
        self.on_data = on_data
        self.on_lost = on_lost
        self.closing = False
        self.transport: asyncio.Transport | None = None
        self._url = url
        self._write_deadline_s = write_deadline_s
        self._given = 0  # bytes handed to the transport; less the unacked ones: bytes the peer took
        self._fd = -1
        self._taken_at_arm = 0
        self._stall: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._fd = sock.fileno()
            _keep_alive(sock)

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    @property
    def pending(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _unacked(self) -> int:
        """Bytes given that the peer has not acknowledged: the transport's buffer and the kernel's queue."""
        try:
            queued = int.from_bytes(fcntl.ioctl(self._fd, termios.TIOCOUTQ, bytes(4)), sys.byteorder)
        except OSError:  # not Linux-like, or the socket is gone: count the transport's buffer only
            queued = 0
        return self.pending + queued

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self._given += len(data)
        self.transport.write(data)

    def pause_writing(self) -> None:
        self._arm_stall()

    def resume_writing(self) -> None:
        self._disarm_stall()

    def _arm_stall(self) -> None:
        self._disarm_stall()
        self._taken_at_arm = self._given - self._unacked()
        self._stall = asyncio.get_running_loop().call_later(self._write_deadline_s, self._check_stall)

    def _disarm_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _check_stall(self) -> None:
        self._stall = None
        if self._given - self._unacked() > self._taken_at_arm:
            self._arm_stall()  # progress: a new period from now
            return
        assert self.transport is not None
        exc = DeviceTimeout(f"tcp write to {self._url} stalled: {self._unacked()} bytes not taken "
                            f"in {self._write_deadline_s} s")
        reported, self.closing = self.closing, True
        self.transport.abort()  # also ends a close() still waiting to flush to a peer that never reads
        if not reported:
            self.on_lost(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_stall()
        if not self.closing:
            self.closing = True
            self.on_lost(exc)


def _keep_alive(sock: socket.socket) -> None:
    """Probe an idle connection so a half-open one (bridge rebooted, cable cut) is found with nothing to
    write; TCP_USER_TIMEOUT bounds unacknowledged data (and the probes) the same way."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES), ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS)):
        option = getattr(socket, name, None)  # Linux has all four; elsewhere the OS defaults stay
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class TcpLink:
    """``socket://host:port``: the board (or a serial-to-Ethernet bridge) over TCP.

    Same write contract as ``SerialLink``: writes never block, what the kernel does not take waits in
    the transport, and no byte taken for ``write_deadline_s`` (a peer that stopped reading) loses the
    link with ``DeviceTimeout``. TCP keepalive finds a silent half-open connection.
    """

    def __init__(self, protocol: _TcpProtocol) -> None:
        assert protocol.transport is not None
        self._transport = protocol.transport
        self._protocol = protocol

    @classmethod
    async def open(cls, url: str, on_data: OnData, on_lost: OnLost, timeout_s: float,
                   *, write_deadline_s: float = WRITE_DEADLINE_S) -> TcpLink:
        parts = urlsplit(url)
        if not parts.hostname or not parts.port:
            raise ValueError(f"bad socket url {url!r}: expected socket://host:port")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, protocol = await loop.create_connection(
                lambda: _TcpProtocol(url, on_data, on_lost, write_deadline_s), parts.hostname, parts.port)
        return cls(protocol)

    @property
    def pending(self) -> int:
        """Bytes accepted by ``write`` that the kernel has not taken yet."""
        return self._protocol.pending

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise DeviceDisconnected("tcp link closed")
        self._protocol.write(data)

    def close(self) -> None:
        self._protocol.closing = True
        self._transport.close()


async def open_link(url: str, baudrate: int, on_data: OnData, on_lost: OnLost,
                    timeout_s: float = 2.0) -> Link:
    """Open ``url``; raises OSError / serial.SerialException / TimeoutError when it is not there,
    ``PortInUse`` (an OSError too) when another program holds the tty."""
    if url.startswith("socket://"):
        return await TcpLink.open(url, on_data, on_lost, timeout_s)
    return SerialLink(url, baudrate, on_data, on_lost)

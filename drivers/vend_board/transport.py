"""Byte transports for the vend board and the MDB adapter: a tty (pyserial, exclusive, timeout=0,
reads and writes driven by the loop) or TCP.

A transport moves bytes and reports loss; it knows nothing about frames. ``open_link(url, ...)``
picks the class from a scheme-keyed table: ``socket://host:port`` -> TCP (asyncio streams have a
real fd-based reader; a pyserial socket URL does not), anything else -> a tty path.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import serial

from drivers.errors import DeviceDisconnected, DeviceTimeout

OnData = Callable[[bytes], None]
OnLost = Callable[[Exception | None], None]

WRITE_DEADLINE_S = 0.2  # no byte taken by the tty for this long: the link is lost (as pyserial's write_timeout was)


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
    def __init__(self, on_data: OnData, on_lost: OnLost) -> None:
        self.on_data = on_data
        self.on_lost = on_lost
        self.closing = False

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.on_lost(exc)


class TcpLink:
    """``socket://host:port``: the board (or a serial-to-Ethernet bridge) over TCP."""

    def __init__(self, transport: asyncio.Transport, protocol: _TcpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def open(cls, url: str, on_data: OnData, on_lost: OnLost, timeout_s: float) -> TcpLink:
        parts = urlsplit(url)
        if not parts.hostname or not parts.port:
            raise ValueError(f"bad socket url {url!r}: expected socket://host:port")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            transport, protocol = await loop.create_connection(
                lambda: _TcpProtocol(on_data, on_lost), parts.hostname, parts.port)
        return cls(transport, protocol)

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise DeviceDisconnected("tcp link closed")
        self._transport.write(data)

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

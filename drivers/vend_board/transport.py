"""Byte transports for the vend board: a tty (pyserial, timeout=0, loop.add_reader) or TCP.

A transport moves bytes and reports loss; it knows nothing about frames. ``open_link(url, ...)``
picks the class from a scheme-keyed table: ``socket://host:port`` -> TCP (asyncio streams have a
real fd-based reader; a pyserial socket URL does not), anything else -> a tty path.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import serial

from drivers.errors import DeviceDisconnected

OnData = Callable[[bytes], None]
OnLost = Callable[[Exception | None], None]


class Link(Protocol):
    """An open byte link; ``on_data``/``on_lost`` callbacks were given at open time."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class SerialLink:
    """A tty opened by pyserial with timeout=0; reads are driven by ``loop.add_reader(fd)``."""

    def __init__(self, port: str, baudrate: int, on_data: OnData, on_lost: OnLost) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._ser = serial.Serial(port, baudrate=baudrate, timeout=0, write_timeout=0.2)
        self._fd: int | None = self._ser.fileno()
        self._loop.add_reader(self._fd, self._readable)

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
        """Write a whole frame (frames are tiny; a tty buffer takes them at once)."""
        if self._fd is None:
            raise DeviceDisconnected("serial link closed")
        try:
            self._ser.write(data)
        except (serial.SerialException, OSError) as exc:
            self._lose(exc)
            raise DeviceDisconnected(f"serial write failed: {exc}") from exc

    def _lose(self, exc: Exception | None) -> None:
        if self._fd is None:
            return
        self.close()
        self._on_lost(exc)

    def close(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
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
    """Open ``url``; raises OSError / serial.SerialException / TimeoutError when it is not there."""
    if url.startswith("socket://"):
        return await TcpLink.open(url, on_data, on_lost, timeout_s)
    return SerialLink(url, baudrate, on_data, on_lost)

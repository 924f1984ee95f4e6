"""Byte endpoints for simulated serial devices: a pty pair (slave at a fixed symlink) and a TCP server.

Both run inside the caller's asyncio loop (``add_reader`` on the pty master; ``create_server``)
and deliver ``on_data(peer, bytes)``; a device answers with ``peer.write(bytes)``. ``close()`` is
the cable being pulled: the pty disappears (the driver's fd reads EIO) / TCP clients are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class Peer(Protocol):
    """One connected controller."""

    @property
    def alive(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


OnData = Callable[[Peer, bytes], None]


class PtyPort:
    """A pty pair whose slave appears at ``link_path`` (like ``/dev/ttyUSB0``); the device owns the master.

    The slave fd is also held open here: otherwise reads on the master fail with EIO (busy-looping
    the reader) whenever the driver has the port closed, e.g. between its reconnect attempts.
    """

    def __init__(self, link_path: str, on_data: OnData) -> None:
        self.link_path = link_path
        self._on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_name = ""
        self.dropped_writes = 0

    @property
    def alive(self) -> bool:
        return self._master is not None

    def open(self) -> str:
        """Create the pty, point ``link_path`` at it, start reading; returns ``link_path``."""
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        tmp = f"{self.link_path}.tmp{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.link_path)  # atomic: a reconnecting driver never sees a half-made link
        asyncio.get_running_loop().add_reader(master, self._readable)
        return self.link_path

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("sim_pty_read_failed", link=self.link_path, error=str(exc))
            asyncio.get_running_loop().remove_reader(self._master)
            return
        if data:
            self._on_data(self, data)

    def write(self, data: bytes) -> None:
        if self._master is None:
            return
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            self.dropped_writes += 1  # nobody reading and the tty buffer is full: bytes fall on the floor

    def close(self) -> None:
        """Pull the cable: remove the symlink, close both ends."""
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(self.link_path) and os.readlink(self.link_path) == self.slave_name:
                os.unlink(self.link_path)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None


class _TcpPeer(asyncio.Protocol):
    def __init__(self, port: TcpPort) -> None:
        self._port = port
        self._transport: asyncio.Transport | None = None

    @property
    def alive(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._port.peers.add(self)

    def data_received(self, data: bytes) -> None:
        self._port.on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._port.peers.discard(self)
        self._transport = None

    def write(self, data: bytes) -> None:
        if self.alive:
            assert self._transport is not None
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class TcpPort:
    """A TCP listener (``socket://host:port`` for the driver); one peer per client."""

    def __init__(self, on_data: OnData) -> None:
        self.on_data = on_data
        self.peers: set[_TcpPeer] = set()
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    async def open(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (again, on the same port after close) and return the port number."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _TcpPeer(self), host, port, reuse_address=True)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop accepting and drop every client."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for peer in list(self.peers):
            peer.close()
        if server is not None:
            async with asyncio.timeout(2.0):
                await server.wait_closed()

"""Serial serving for the simulated vend board (``hw_sim/vend_board.py``): the pty and TCP ports,
one frame reader per controller connection, the line faults (``garble``, ``silence``,
``unplug``/``replug``) and the background-thread runner. The board's state and semantics live in
``SimVendBoard``, which subclasses ``BoardPorts`` and implements ``_handle``.
Imports only the driver's pure codec (see ARCHITECTURE.md).
"""

from __future__ import annotations

import random

import structlog

from drivers.vend_board.codec import Frame, FrameReader, encode
from hw_sim.serial_link import Peer, PtyPort, TcpPort
from hw_sim.threaded import LoopThread

log = structlog.get_logger("hw_sim.vend_board")


class BoardPorts:
    """Ports and wire of one simulated board; ``_handle(peer, frame)`` is the board's business."""

    def __init__(self, seed: int) -> None:
        self.counters: dict[str, int] = dict.fromkeys(
            ("vends", "duplicates", "jams", "busy", "crc_errors", "frames_in", "frames_out", "resets",
             "stale_boot"), 0)
        self._rng = random.Random(seed)
        self._deaf = False  # between a reset and the power-up: hears and says nothing
        self._garble = 0
        self._silence = 0
        self._readers: dict[int, FrameReader] = {}
        self._pty: PtyPort | None = None
        self._tcp: TcpPort | None = None
        self._tcp_addr: tuple[str, int] | None = None

    def _handle(self, peer: Peer, frame: Frame) -> None:
        raise NotImplementedError

    # ---- serving -----------------------------------------------------------------------------

    async def serve_pty(self, link_path: str) -> str:
        """Create a pty pair; ``link_path`` becomes a symlink to its slave. Returns ``link_path``."""
        self._pty = PtyPort(link_path, self._on_data)
        return self._pty.open()

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on TCP; the driver URL is ``socket://host:port``. Returns the port."""
        self._tcp = TcpPort(self._on_data)
        port = await self._tcp.open(host, port)
        self._tcp_addr = (host, port)
        return port

    async def unplug(self) -> None:
        """Pull the cable: the pty and its symlink vanish, TCP clients are dropped and refused."""
        if self._pty is not None:
            self._pty.close()
        if self._tcp is not None:
            await self._tcp.close()
        self._readers.clear()
        log.info("sim_vend_board_unplugged")

    async def replug(self) -> None:
        """Plug back in: a new pty behind the same link path / listen again on the same port."""
        if self._pty is not None:
            self._pty = PtyPort(self._pty.link_path, self._on_data)
            self._pty.open()
        if self._tcp is not None and self._tcp_addr is not None:
            await self._tcp.open(*self._tcp_addr)
        log.info("sim_vend_board_replugged")

    async def stop(self) -> None:
        """Close every port (a board subclass stops its motors and timers first)."""
        await self.unplug()
        self._pty = None
        self._tcp = None

    # ---- line faults -------------------------------------------------------------------------

    def garble(self, frames: int = 1) -> None:
        """Corrupt the next ``frames`` reply frames (alternately one flipped byte / random bytes)."""
        self._garble += frames

    def silence(self, frames: int = 1) -> None:
        """Ignore the next ``frames`` request frames (as if they never arrived)."""
        self._silence += frames

    # ---- wire --------------------------------------------------------------------------------

    def _on_data(self, peer: Peer, data: bytes) -> None:
        if self._deaf:
            return
        reader = self._readers.setdefault(id(peer), FrameReader())
        before = reader.crc_errors
        frames = reader.feed(data)
        self.counters["crc_errors"] += reader.crc_errors - before
        for frame in frames:
            self.counters["frames_in"] += 1
            if self._deaf:
                return
            if self._silence > 0:
                self._silence -= 1
                continue
            self._handle(peer, frame)

    def _send(self, peer: Peer, msg: Frame) -> None:
        if self._deaf:
            return
        raw = encode(msg)
        if self._garble > 0:
            self._garble -= 1
            raw = self._corrupt(raw)
        if peer.alive:
            self.counters["frames_out"] += 1
            peer.write(raw)

    def _corrupt(self, raw: bytes) -> bytes:
        if self._garble % 2 == 0:
            out = bytearray(raw)
            out[self._rng.randrange(2, len(out))] ^= 1 << self._rng.randrange(8)
            return bytes(out)
        return self._rng.randbytes(len(raw))

    def _broadcast(self, msg: Frame) -> None:
        """Send ``msg`` to every connected controller (unsolicited events)."""
        peers: list[Peer] = []
        if self._pty is not None and self._pty.alive:
            peers.append(self._pty)
        if self._tcp is not None:
            peers.extend(self._tcp.peers)
        for peer in peers:
            self._send(peer, msg)


class SimThread(LoopThread):
    """A simulated board running in its own thread and loop, for talking to a daemon subprocess."""

    name = "sim.vend_board"

    def __init__(self, sim: BoardPorts, link_path: str | None, host: str, port: int) -> None:
        self.sim = sim
        self.url = ""
        self._where = (link_path, host, port)
        super().__init__()

    async def _serve(self) -> None:
        link_path, host, port = self._where
        if link_path is not None:
            self.url = await self.sim.serve_pty(link_path)
        else:
            self.url = f"socket://{host}:{await self.sim.serve_tcp(host, port)}"

    async def _close(self) -> None:
        await self.sim.stop()


def run_in_thread(sim: BoardPorts, *, link_path: str | None = None, host: str = "127.0.0.1",
                  port: int = 0, timeout_s: float = 5.0) -> SimThread:
    """Serve ``sim`` from a background thread: on a pty at ``link_path`` or else on TCP.

    Returns a handle with ``.url`` (tty path or ``socket://host:port``), ``.call(fn, *args)`` for the
    fault API and ``.stop()``.
    """
    handle = SimThread(sim, link_path, host, port)
    handle.start(timeout_s)
    return handle

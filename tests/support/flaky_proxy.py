"""A seeded, flaky TCP proxy for network-fault tests: drops connections before a request is
forwarded, delays chunks, and cuts responses part-way (so the server did the work but the client
never hears the answer). Loopback only; stops by itself when the test ends.

    async with FlakyProxy("127.0.0.1", cloud_port, seed=7, drop_rate=0.1, cut_rate=0.1) as proxy:
        client = SyncClient(f"http://127.0.0.1:{proxy.port}", ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    """What the proxy did, for assertions and reports."""

    connections: int = 0
    dropped: int = 0  # request chunk thrown away and connection closed
    cut: int = 0  # response cut part-way, connection closed
    delayed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    faults: list[str] = field(default_factory=list)


class FlakyProxy:
    """TCP proxy host:port → target with seeded random faults. `enabled=False` passes through."""

    def __init__(self, target_host: str, target_port: int, *, seed: int = 0,
                 drop_rate: float = 0.0, cut_rate: float = 0.0, delay_rate: float = 0.0,
                 max_delay_s: float = 0.05, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.drop_rate, self.cut_rate = drop_rate, cut_rate
        self.delay_rate, self.max_delay_s = delay_rate, max_delay_s
        self.enabled = True
        self.stats = ProxyStats()
        # one stream per decision: how TCP happens to chunk the bytes (which varies with load) changes
        # how many rolls are made, but never which roll is the n-th drop or cut for a seed
        self._rng = {kind: random.Random(f"{seed}-{kind}") for kind in ("delay", "drop", "cut", "amount")}
        self._listen = (host, port)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> FlakyProxy:
        self._server = await asyncio.start_server(self._accept, *self._listen)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FlakyProxy:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _roll(self, kind: str, rate: float) -> bool:
        return self.enabled and rate > 0 and self._rng[kind].random() < rate

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.stats.connections += 1
        up_writer = None
        try:
            async with asyncio.timeout(5):
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            pumps = [asyncio.create_task(self._pump(reader, up_writer, up=True)),
                     asyncio.create_task(self._pump(up_reader, writer, up=False))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, TimeoutError):
            pass  # upstream down: the client sees a closed connection, which is the point
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._conns.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := await src.read(65536):
                if self._roll("delay", self.delay_rate):
                    self.stats.delayed += 1
                    await asyncio.sleep(self._rng["amount"].uniform(0, self.max_delay_s))
                if up and self._roll("drop", self.drop_rate):
                    self.stats.dropped += 1
                    self.stats.faults.append("drop")
                    return
                if not up and self._roll("cut", self.cut_rate):
                    self.stats.cut += 1
                    self.stats.faults.append("cut")
                    dst.write(chunk[: self._rng["amount"].randrange(len(chunk))])
                    await dst.drain()
                    return
                dst.write(chunk)
                await dst.drain()
                if up:
                    self.stats.bytes_up += len(chunk)
                else:
                    self.stats.bytes_down += len(chunk)

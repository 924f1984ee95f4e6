"""An aiohttp reverse proxy in front of the reference cloud that can answer 500, hang, or answer
slowly on demand (`proxy.mode = "500" | "hang" | "slow" | "ok"`). Loopback only, stops with the test.
Signed requests pass unchanged: the signature covers method, path and the uncompressed body."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class FaultyCloud:
    """`async with FaultyCloud(upstream_url) as proxy:` → `proxy.url` for the machine's sync.url."""

    def __init__(self, upstream: str, *, slow_s: float = 0.5) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "ok"
        self.slow_s = slow_s
        self.seen: Counter[str] = Counter()  # requests answered per mode
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultyCloud:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *_: object) -> None:
        self._release.set()  # hanging handlers answer 503 and end
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.Response:
        mode = self.mode
        self.seen[mode] += 1
        if mode == "500":
            return web.json_response({"error": "internal"}, status=500)
        if mode == "hang":
            await self._release.wait()  # the machine's request deadline fires first
            return web.json_response({"error": "unavailable"}, status=503)
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()  # aiohttp already inflated a gzip body: drop Content-Encoding
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._http.request(request.method, self.upstream + request.path_qs, data=body,
                                      headers=headers) as resp:
            data = await resp.read()
            keep = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "etag")}
            return web.Response(status=resp.status, body=data, headers=keep)

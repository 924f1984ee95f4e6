"""Simulated IP cameras over HTTP: `/cam/<name>.jpg` (one snapshot) and `/cam/<name>.mjpg` (MJPEG).

Like a cheap IP camera, each name serves a JPEG snapshot endpoint and a
`multipart/x-mixed-replace` stream a few frames per second; `cv2.VideoCapture(url)` reads the
stream through FFmpeg. Frames come from a renderer: a `ShelfRenderer` (anything with
`.render()`; its `.world.version` keys a cache, so an unchanged shelf is not re-rendered) or any
`render_fn() -> ndarray` (BGR). Rendering and JPEG encoding run in a worker thread.

Fault API (scripted, per camera): `fail(name, mode)` with
  * ``dead``   — the camera is gone: 503 on snapshots, open streams are closed, new ones refused;
  * ``frozen`` — the camera hangs: requests are accepted but no byte is ever sent;
  * ``black``  — the image is all black (lens covered, illumination LED dead);
and `heal(name)`. Never imports edge or sync.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np
import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

FAULT_MODES = ("dead", "frozen", "black")
BOUNDARY = "vendedgeframe"


class _Feed:
    """One camera: its renderer, a JPEG cache keyed by world version, render conditions, fault."""

    def __init__(self, name: str, source: Any) -> None:
        self.name = name
        self.source = source
        self.conditions: dict[str, Any] = {}
        self.fault: str | None = None
        self._cache: tuple[Any, bytes] | None = None
        self._black: bytes | None = None
        self.renders = 0

    def _version(self) -> Any:
        world = getattr(self.source, "world", None)
        version = getattr(world, "version", None)
        return None if version is None else (version, tuple(sorted(self.conditions.items())))

    def jpeg(self) -> bytes:
        """Blocking (runs in a thread): the current picture as JPEG bytes."""
        key = self._version()
        if self.fault == "black":
            return self._black_jpeg()
        if key is not None and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        render: Callable[..., np.ndarray] = getattr(self.source, "render", self.source)
        image = render(**self.conditions)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError(f"camera {self.name}: JPEG encoding failed")
        data = buf.tobytes()
        self.renders += 1
        if key is not None:
            self._cache = (key, data)
        return data

    def _black_jpeg(self) -> bytes:
        if self._black is None:
            h, w = self._shape()
            ok, buf = cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8))
            self._black = buf.tobytes()
        return self._black

    def _shape(self) -> tuple[int, int]:
        return int(getattr(self.source, "height", 480)), int(getattr(self.source, "width", 640))


class CameraServer:
    """Serves every named renderer as a snapshot + MJPEG camera on one aiohttp site."""

    def __init__(self, renderers: Mapping[str, Any], host: str = "127.0.0.1", port: int = 0, *,
                 fps: float = 5.0) -> None:
        self._feeds = {name: _Feed(name, src) for name, src in renderers.items()}
        self.host, self.port, self.fps = host, port, fps
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    def url(self, name: str, kind: str = "jpg") -> str:
        """`http://host:port/cam/<name>.jpg` (or `.mjpg`) of a started server."""
        return f"http://{self.host}:{self.port}/cam/{name}.{kind}"

    async def start(self) -> int:
        """Bind and serve; returns the port (an ephemeral one when port=0)."""
        app = web.Application()
        app.router.add_get("/cam/{name}.jpg", self._snapshot)
        app.router.add_get("/cam/{name}.mjpg", self._stream)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("camera_server_started", host=self.host, port=self.port, cameras=sorted(self._feeds))
        return self.port

    async def stop(self) -> None:
        """Close streams and the site; pending frozen requests are released."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("camera_server_stopped", port=self.port)

    def fail(self, name: str, mode: str = "dead") -> None:
        """Inject a fault into one camera (see module docstring)."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown camera fault {mode!r}; allowed: {FAULT_MODES}")
        self._feed(name).fault = mode
        log.info("camera_fault_injected", camera=name, mode=mode)

    def heal(self, name: str) -> None:
        self._feed(name).fault = None
        log.info("camera_fault_healed", camera=name)

    def set_conditions(self, name: str, **render_kwargs: Any) -> None:
        """Render parameters for one camera (lighting, noise, occlusion, jitter_px)."""
        self._feed(name).conditions = dict(render_kwargs)

    def renders(self, name: str) -> int:
        """How many frames were actually rendered (the rest came from the version cache)."""
        return self._feed(name).renders

    def _feed(self, name: str) -> _Feed:
        try:
            return self._feeds[name]
        except KeyError:
            raise KeyError(f"no camera named {name!r}; have {sorted(self._feeds)}") from None

    async def _hang(self, feed: _Feed) -> None:
        """A frozen camera: hold the connection open without a byte until healed or stopped."""
        while feed.fault == "frozen" and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._stopping.wait()

    def _answering_feed(self, request: web.Request) -> _Feed:
        """The camera a request names, unless it does not exist (404) or is dead (503)."""
        feed = self._feeds.get(request.match_info["name"])
        if feed is None:
            raise web.HTTPNotFound(text="no such camera")
        if feed.fault == "dead":
            raise web.HTTPServiceUnavailable(text="camera offline")
        return feed

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        feed = self._answering_feed(request)
        if feed.fault == "frozen":
            await self._hang(feed)
            if self._stopping.is_set():
                raise web.HTTPServiceUnavailable(text="server stopping")
        data = await asyncio.to_thread(feed.jpeg)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        feed = self._answering_feed(request)
        resp = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", "Cache-Control": "no-store"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await self._pump(feed, resp)
        return resp

    async def _pump(self, feed: _Feed, resp: web.StreamResponse) -> None:
        period = 1.0 / self.fps
        while not self._stopping.is_set() and feed.fault != "dead":
            if feed.fault == "frozen":
                await self._hang(feed)
                continue
            data = await asyncio.to_thread(feed.jpeg)
            head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n").encode()
            await resp.write(head + data + b"\r\n")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._stopping.wait()

"""Live updates by Server-Sent Events: one publisher builds a snapshot, every open page receives it.

The snapshot is computed once per tick however many browsers listen (so 50 phones cost one set of
queries a second), and only while someone listens. Actions `poke()` the hub for an immediate push.
A slow client's queue holds one snapshot; older ones are dropped, never buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from aiohttp import web

from edge.services.queries import Queries, money
from edge.web import fmt
from edge.web.chart import temperature_chart

log = structlog.get_logger(__name__)

HEARTBEAT_S = 15.0
TASK_NAME = "web.sse.publisher"
WRITE_TIMEOUT_S = 5.0


class Hub:
    """Fan-out of live snapshots to subscribers (one bounded queue each)."""

    def __init__(self, queries: Queries, interval_s: float = 1.0) -> None:
        self.q = queries
        self.interval_s = interval_s
        self.subscribers: set[asyncio.Queue[str | None]] = set()
        self.last: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    def poke(self) -> None:
        self._wake.set()

    def start(self) -> None:
        """Run the publisher as an unsupervised task (tests, tools); the daemon's supervisor runs `run()`."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=TASK_NAME)

    async def stop(self) -> None:
        for sub in list(self.subscribers):
            _offer(sub, None)  # ends every open stream
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def subscribe(self) -> asyncio.Queue[str | None]:
        sub: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        if self.last is not None:
            sub.put_nowait(self.last)
        self.subscribers.add(sub)
        self.poke()
        return sub

    def unsubscribe(self, sub: asyncio.Queue[str | None]) -> None:
        self.subscribers.discard(sub)

    async def snapshot(self) -> dict[str, Any]:
        d = await self.q.dashboard()
        stock = {r["slot_id"]: [r["count"], r["capacity"], r["low"]] for r in await self.q.stock()}
        tz, now = self.q.tz, self.q.now()
        sync = {**d["sync"], "last_ack_text": fmt.when(d["sync"]["last_ack"], tz, now)}
        alarms = [{**a, "raised_text": fmt.local_time(a.get("raised_at"), tz)} for a in d["alarms"]]
        devices = [{**dev, "seen_text": fmt.seen(dev["seen_s_ago"])} for dev in d["devices"]]
        return {"machine_id": d["machine_id"], "mode": d["mode"], "uptime_s": d["uptime_s"],
                "uptime_text": fmt.human_duration(d["uptime_s"]), "door": d["door"],
                "temperature": d["temperature"], "chart": temperature_chart(d["temperature"], tz), "sync": sync,
                "alarms": alarms,
                "revenue_text": money(d["sales_today"]["revenue"], d["sales_today"]["currency"]), "unreconciled_vends": d["unreconciled_vends"],
                "devices": devices, "sales_today": d["sales_today"], "lockouts": len(d["lockouts"]),
                "low_stock": d["low_stock"], "stock": stock}

    async def run(self) -> None:
        """Publish a snapshot every `interval_s` (or when poked) while anyone listens; runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if not self.subscribers:
                continue
            try:
                snap = json.dumps(await self.snapshot(), separators=(",", ":"), default=str)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed tick must not end live updates for everyone
                log.warning("sse_snapshot_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            self.ticks += 1
            if snap == self.last:
                continue
            self.last = snap
            for sub in list(self.subscribers):
                _offer(sub, snap)


HUB = web.AppKey("hub", Hub)


def _offer(sub: asyncio.Queue[str | None], item: str | None) -> None:
    if sub.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            sub.get_nowait()
    sub.put_nowait(item)


async def live(request: web.Request) -> web.StreamResponse:
    """GET /live: `event: snapshot` with the dashboard JSON whenever it changes; comments as heartbeat."""
    hub: Hub = request.app[HUB]
    token = request.cookies.get("vendedge_session", "")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    sub = hub.subscribe()
    try:
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    item = await sub.get()
            except TimeoutError:
                item = ""
            if item is None or await hub.q.users.session(token) is None:
                break  # shutting down, or logged out / expired: the stream ends with the session
            chunk = f"event: snapshot\ndata: {item}\n\n" if item else ": keep-alive\n\n"
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await resp.write(chunk.encode())
    except (ConnectionResetError, TimeoutError) as exc:
        log.debug("sse_client_gone", error=type(exc).__name__)
    finally:
        hub.unsubscribe(sub)
    return resp

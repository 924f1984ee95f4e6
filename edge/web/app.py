"""The technician diagnostics app: aiohttp, server-rendered pages, JSON API, live stream, metrics.

Wiring (edge/daemon.py): ``runner = await start_web(machine, config.web, secrets)`` after the machine is
built, and ``await runner.cleanup()`` on stop. Everything the page needs ships in this package (no CDN,
no web fonts); static files come from a fixed list read at start, so no request path ever reaches the
file system.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import mimetypes
import zoneinfo
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import jinja2
import structlog
from aiohttp import web

from edge.clock import SystemClock
from edge.config import Secrets, WebConfig
from edge.services.machine import Machine
from edge.services.queries import Queries, money
from edge.services.technician import Technician
from edge.web import api, audit, auth, dex, fmt, haccp, kiosk, metrics, prices, products, sse, views
from edge.web.keys import ALLOWED_HOSTS, FLASH, HUB, JINJA, METRICS_TOKEN, QUERIES, STATIC, STATS, TECHNICIAN

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 2  # concurrent requests being worked on (a machine has 2 cores and sales come first)
MAX_BODY = 64 * 1024  # forms and JSON here are tiny; anything larger is refused with 413
BODY_LIMITS = {"/products/upload": products.UPLOAD_MAX}  # reference photos: the only larger bodies
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "Cross-Origin-Opener-Policy": "same-origin",
                    "Permissions-Policy": "camera=(), microphone=(), geolocation=()"}
STATIC_TYPES = {".css", ".js", ".svg", ".png", ".ico"}


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """name -> (body, content type, etag) for every file shipped in edge/web/static."""
    out: dict[str, tuple[bytes, str, str]] = {}
    root = importlib.resources.files("edge.web") / "static"
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in STATIC_TYPES:
            body = entry.read_bytes()
            ctype = mimetypes.types_map.get(suffix, "application/octet-stream")
            out[entry.name] = (body, ctype, hashlib.sha256(body).hexdigest()[:16])
    return out


@auth.public
async def static(request: web.Request) -> web.Response:
    """GET /static/{name}: only names from the shipped list; anything else (traversal included) is 404."""
    item = request.app[STATIC].get(request.match_info["name"])
    if item is None:
        raise web.HTTPNotFound(text="not found")
    body, ctype, etag = item
    if request.headers.get("If-None-Match") == f'"{etag}"':
        return web.Response(status=304, headers={"ETag": f'"{etag}"'})
    return web.Response(body=body, content_type=ctype, headers={"ETag": f'"{etag}"', "Cache-Control": "no-cache"})


@auth.public
async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@web.middleware
async def guard_middleware(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """Outermost: body limit before anything reads, JSON errors for the API, status counters."""
    stats: Counter[str] = request.app[STATS]["responses"]
    limit = BODY_LIMITS.get(request.path, MAX_BODY)
    if request.content_length is not None and request.content_length > limit:
        stats["4xx"] += 1
        return _error(request, 413, "too_large", f"request body over {limit} bytes")
    if limit != MAX_BODY and request.method == "POST":
        request = request.clone(client_max_size=limit)
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        stats[f"{exc.status // 100}xx"] += 1
        if exc.status >= 400 and auth.is_api(request) and exc.content_type != "application/json":
            resp = _error(request, exc.status, exc.reason.lower().replace(" ", "_"), exc.text or "")
            if "Allow" in exc.headers:  # a 405 names the methods the path has (RFC 9110)
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        raise
    stats[f"{resp.status // 100}xx"] += 1
    return resp


def limit_middleware(max_in_flight: int) -> Any:
    """At most `max_in_flight` requests are worked on at once; the rest wait their turn without putting
    callbacks on the loop, so a sale in progress is never queued behind a burst of page loads.
    Live streams (which stay open) do not take a slot."""
    sem = asyncio.Semaphore(max_in_flight)

    @web.middleware
    async def limit(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
        if request.path == "/live":
            return await handler(request)
        async with sem:
            return await handler(request)
    return limit


def _error(request: web.Request, status: int, code: str, detail: str) -> web.Response:
    if auth.is_api(request):
        return auth.json_error(status, code, detail)
    return web.Response(status=status, text=f"{status}: {detail}")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    response.headers["Server"] = "vendedge"  # no framework name or version for a scanner to match
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


def _add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", auth.login_page)
    r.add_post("/login", auth.login_submit)
    r.add_post("/logout", auth.logout)
    r.add_get("/", views.dashboard)
    r.add_get("/stock", views.stock_page)
    r.add_post("/stock/restock", views.restock_action)
    r.add_post("/stock/fill-all", views.fill_all_action)
    r.add_post("/stock/count", views.count_action)
    r.add_get("/picklist", views.picklist_page)
    r.add_get("/sales", views.sales_page)
    r.add_post("/review/{sid}", views.review_action)
    r.add_get("/devices", views.devices_page)
    r.add_get("/evidence/{sid}/{name}", views.evidence_image)
    r.add_post("/devices/test-vend", views.test_vend_action)
    r.add_post("/devices/unlock", views.unlock_action)
    r.add_post("/devices/tare", views.tare_action)
    r.add_post("/devices/clear-lockout", views.clear_lockout_action)
    r.add_post("/devices/read-registers", views.read_registers_action)
    r.add_get("/events", views.events_page)
    r.add_get("/export", views.export_page)
    r.add_get("/export/orders.csv", views.orders_csv)
    r.add_get("/live", sse.live)
    r.add_get("/metrics", metrics.metrics)
    r.add_get("/healthz", healthz)
    r.add_get("/static/{name}", static)
    dex.add_routes(app)
    products.add_routes(app)
    haccp.add_routes(app)
    prices.add_routes(app)
    api.add_routes(app)
    kiosk.add_routes(app)
    audit.add_routes(app)


def create_app(machine: Machine, secrets: Secrets, *, web_cfg: WebConfig | None = None,
               live_interval_s: float = 1.0, session_clock: SystemClock | None = None,
               spawn: Callable[[str, Callable[[], Awaitable[None]]], object] | None = None) -> web.Application:
    """Build the app for one machine (not started). Tests use it with aiohttp's runner.

    `web_cfg` gives the time zone and extra Host names (the defaults: UTC, none); `session_clock` times
    logins and sessions (default: the ledger's clock); a sped-up demo passes wall time. `spawn(name,
    factory)` (the daemon's Supervisor.spawn) runs the live-update publisher; without it, a plain task.
    """
    web_cfg = web_cfg or WebConfig()
    app = web.Application(middlewares=[guard_middleware, limit_middleware(MAX_IN_FLIGHT), auth.auth_middleware],
                          client_max_size=MAX_BODY)
    tz = zoneinfo.ZoneInfo(web_cfg.timezone)
    queries = Queries(machine, session_clock=session_clock, tz=tz)
    app[ALLOWED_HOSTS] = frozenset(h.lower() for h in web_cfg.allowed_hosts)
    hub = sse.Hub(queries, live_interval_s)
    app[QUERIES], app[HUB], app[FLASH] = queries, hub, {}
    app[TECHNICIAN] = Technician(machine, queries)
    app[METRICS_TOKEN] = secrets.metrics_token
    app[STATIC] = _load_static()
    app[STATS] = {"responses": Counter(), "sse_clients": lambda: len(hub.subscribers)}
    env = jinja2.Environment(loader=jinja2.PackageLoader("edge.web", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["money"] = money
    env.filters["localtime"] = lambda v, **kw: fmt.local_time(v, tz, **kw)
    env.filters["ago"] = lambda v: fmt.ago(v, queries.now())
    env.filters["duration"] = fmt.human_duration
    env.filters["when"] = lambda v: fmt.when(v, tz, queries.now())
    env.filters["seen"] = fmt.seen
    env.globals["zone"] = lambda: fmt.zone_label(tz, queries.now())
    env.globals["static_url"] = lambda name: f"/static/{name}?v={app[STATIC][name][2]}"
    app[JINJA] = env
    _add_routes(app)
    app.on_response_prepare.append(_security_headers)

    async def on_startup(_: web.Application) -> None:
        if spawn is not None:  # the daemon's supervisor owns the publisher (restart on crash)
            spawn(sse.TASK_NAME, hub.run)
        else:
            hub.start()

    async def on_shutdown(_: web.Application) -> None:
        await hub.stop()  # ends open live streams so shutdown does not wait for them
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


async def start_web(machine: Machine, web_cfg: WebConfig, secrets: Secrets, **app_options: Any) -> web.AppRunner:
    """Serve the app on web_cfg.host:web_cfg.port; returns the runner (`await runner.cleanup()` to stop).

    `app_options` go to `create_app` (live_interval_s, session_clock)."""
    runner = web.AppRunner(create_app(machine, secrets, web_cfg=web_cfg, **app_options), access_log=None,
                           shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, web_cfg.host, web_cfg.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()  # e.g. the port is taken: stop what setup() started (the live publisher)
        raise
    log.info("web_started", host=web_cfg.host, port=_bound_port(runner) or web_cfg.port)
    return runner


def _bound_port(runner: web.AppRunner) -> int | None:
    """The real port (useful when the config says 0 = any free port)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return None


def bound_port(runner: web.AppRunner) -> int:
    port = _bound_port(runner)
    if port is None:
        raise RuntimeError("web app is not listening")
    return port


def route_table(app: web.Application) -> list[dict[str, Any]]:
    """Every route with its method and access level (the security tests walk this list)."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        out.append({"method": route.method, "path": path, "access": auth.level_of(route.handler)})
    return out

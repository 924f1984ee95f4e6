"""The reference cloud: aiohttp app with the signed machine API (/v1) and the admin API.

Machine requests pass `machine_auth` (signature, ±300 s window, nonce cache) before any handler
runs, so a rejected request stores nothing. The SQLite store runs on one worker thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiohttp import web

from edge.core.wire import OutboxRecord
from sync import protocol, signing
from sync.refcloud.store import Store

log = structlog.get_logger(__name__)
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE = web.AppKey("store", Store)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
SECRETS: web.AppKey[dict[str, bytes]] = web.AppKey("secrets")
NONCES = web.AppKey("nonces", signing.NonceCache)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
WAKEUPS: web.AppKey[dict[str, asyncio.Event]] = web.AppKey("wakeups")
CLOSING = web.AppKey("closing", asyncio.Event)
ADMIN_TOKEN = web.AppKey("admin_token", str)
# called with a machine id when its commands or config changed (the MQTT worker publishes them)
CHANGE_LISTENERS: web.AppKey[list[Callable[[str], None]]] = web.AppKey("change_listeners")
MACHINE = web.RequestKey("machine_id", str)
BODY = web.RequestKey("body", bytes)
MAX_BODY_BYTES = 8 * 1024 * 1024  # decompressed; the client's batches are <= 1 MB
INT64_MAX = 2**63 - 1  # SQLite INTEGER; larger numbers are refused at the edge, never stored
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")  # ASCII digits only: "²".isdigit() is True
BACKLOG_RE = re.compile(r"[0-9]{1,18}")


async def run_db(app: web.Application, fn: Callable[..., T], *args: Any) -> T:
    """Run a store call on the store's single worker thread."""
    return await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], fn, *args)


def iso(ts: float) -> str:
    """Unix seconds → UTC ISO-8601 with a Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def error(status: int, code: str, **fields: Any) -> web.Response:
    """A JSON error answer: {"error": code, ...}."""
    return web.json_response({"error": code, **fields}, status=status)


def _reject(request: web.Request, code: str, **fields: Any) -> web.Response:
    log.warning("machine_request_rejected", reason=code, path=request.path,
                machine_id=request.headers.get(signing.HEADER_MACHINE), remote=request.remote)
    return error(401, code, **fields)


async def _read_body(request: web.Request) -> bytes | web.Response:
    """The (decompressed) body, at most MAX_BODY_BYTES; a corrupt or oversized body is a 4xx."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return error(413, "body_too_large", max_bytes=MAX_BODY_BYTES)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "body_too_large", max_bytes=MAX_BODY_BYTES)
    except Exception as exc:  # noqa: BLE001 - aiohttp raises parser errors (bad gzip/deflate) here
        log.warning("machine_body_unreadable", path=request.path, error=repr(exc)[:200])
        return error(400, "bad_body", reason="body could not be read or decompressed")


@web.middleware
async def machine_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the HMAC signature, timestamp window and nonce of every /v1 request.

    An unknown path or method is answered (404/405) before any authentication."""
    routing_error = request.match_info.http_exception
    if routing_error is not None:
        raise routing_error
    if not request.path.startswith(protocol.API_PREFIX + "/"):
        return await handler(request)
    app = request.app
    now = app[CLOCK]()
    machine_id = request.headers.get(signing.HEADER_MACHINE, "")
    secret = app[SECRETS].get(machine_id)
    if secret is None or request.match_info.get("machine_id") != machine_id:
        return _reject(request, "unknown_machine")
    ts_text = request.headers.get(signing.HEADER_TIMESTAMP, "")
    nonce = request.headers.get(signing.HEADER_NONCE, "")
    signature = request.headers.get(signing.HEADER_SIGNATURE, "")
    if not TIMESTAMP_RE.fullmatch(ts_text) or not nonce or not signature:
        return _reject(request, "missing_auth_headers")
    if abs(now - int(ts_text)) > signing.TIMESTAMP_WINDOW_S:
        return _reject(request, "stale_timestamp", server_time=int(now))
    # The signature covers the uncompressed body (docs/protocols/sync.md), so the body is read
    # here — only after the cheap header checks, bounded, and a corrupt one is a 400.
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    if not signing.verify_request(secret, request.method, request.raw_path, ts_text, nonce, body,
                                  signature):
        return _reject(request, "bad_signature")
    if not app[NONCES].check_and_add(machine_id, nonce, now):
        return _reject(request, "replayed_nonce")
    backlog = request.headers.get("X-Backlog", "")
    if backlog and not BACKLOG_RE.fullmatch(backlog):
        return error(400, "bad_request", reason="X-Backlog must be a non-negative integer (< 10^18)")
    await run_db(app, app[STORE].seen, machine_id, now, int(backlog) if backlog else None)
    request[MACHINE] = machine_id
    request[BODY] = body
    return await handler(request)


def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(request[BODY] or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise bad_json(exc) from exc


def bad_json(exc: Exception) -> web.HTTPBadRequest:
    """400 bad_json for a body that is not JSON (or nested too deep to parse)."""
    reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
    return web.HTTPBadRequest(text=json.dumps({"error": "bad_json", "reason": reason}),
                              content_type="application/json")


def out_of_range(obj: Any) -> bool:
    """True when any integer inside `obj` does not fit SQLite's 64-bit INTEGER (iterative walk)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not -INT64_MAX - 1 <= item <= INT64_MAX:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


async def push_outbox(request: web.Request) -> web.Response:
    """POST /v1/machines/{id}/outbox → per-record acks; valid records stored once."""
    try:
        raw = protocol.parse_push(_json_body(request))
    except protocol.ProtocolInvalid as exc:
        return error(400, "bad_request", reason=exc.reason)
    acks, valid = check_records(raw)
    statuses = await run_db(request.app, request.app[STORE].ingest, request[MACHINE], valid,
                            request.app[CLOCK]())
    return web.json_response({"acks": fill_acks(acks, statuses)})


def check_records(raw: list[Any], *, small_ints: bool = False) -> tuple[list[dict[str, Any]], list[OutboxRecord]]:
    """Per-record validation of a push (HTTPS or MQTT): the acks so far (`status` "" for the
    valid ones, to be filled with the store's answer) and the valid records. `small_ints`: the
    caller knows no integer in the body has more than 18 digits (so none can exceed 64 bits)."""
    acks: list[dict[str, Any]] = []
    valid = []
    for obj in raw:
        try:
            if not small_ints and out_of_range(obj):
                raise protocol.ProtocolInvalid("bad_number: integers must fit 64 bits")
            record = protocol.parse_record(obj)
        except protocol.ProtocolInvalid as exc:
            acks.append({"record_id": protocol.record_id_of(obj) or "", "status": "invalid",
                         "reason": exc.reason})
            continue
        valid.append(record)
        acks.append({"record_id": record.record_id, "status": ""})
    return acks, valid


def fill_acks(acks: list[dict[str, Any]], statuses: list[str]) -> list[dict[str, Any]]:
    """Put the store's stored/duplicate answers into the valid records' acks, in order."""
    answers = iter(statuses)
    for ack in acks:
        if not ack["status"]:
            ack["status"] = next(answers)
    return acks


async def get_config(request: web.Request) -> web.Response:
    """GET /v1/machines/{id}/config with If-None-Match → 304 or {version, doc}."""
    cfg = await run_db(request.app, request.app[STORE].config, request[MACHINE])
    if cfg is None:
        return error(404, "no_config")
    version, doc = cfg
    headers = {"ETag": protocol.etag(version)}
    if protocol.parse_etag(request.headers.get("If-None-Match")) == version:
        return web.Response(status=304, headers=headers)
    return web.json_response({"version": version, "doc": doc}, headers=headers)


def wake(app: web.Application, machine_id: str) -> None:
    """Wake a waiting long-poll of this machine (and tell the MQTT worker, when one runs)."""
    event = app[WAKEUPS].pop(machine_id, None)
    if event is not None:
        event.set()
    for listener in app[CHANGE_LISTENERS]:
        listener(machine_id)


async def poll_commands(request: web.Request) -> web.Response:
    """GET /v1/machines/{id}/commands?wait=N: pending commands, signed; waits up to N s."""
    app, machine_id = request.app, request[MACHINE]
    try:
        wait = min(max(int(request.query.get("wait", "0")), 0), protocol.MAX_POLL_WAIT_S)
    except ValueError:
        return error(400, "bad_request", reason="wait must be an integer")
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        event = app[WAKEUPS].setdefault(machine_id, asyncio.Event())
        cmds = await run_db(app, app[STORE].pending_commands, machine_id, app[CLOCK]())
        remaining = deadline - asyncio.get_running_loop().time()
        if cmds or remaining <= 0 or app[CLOSING].is_set():
            break
        try:
            async with asyncio.timeout(remaining):
                await event.wait()
        except TimeoutError:
            pass
    secret = app[SECRETS][machine_id]
    for c in cmds:
        c["signature"] = signing.sign_command(secret, c)
    return web.json_response({"commands": cmds, "server_time": int(app[CLOCK]())})


async def post_result(request: web.Request) -> web.Response:
    """POST /v1/machines/{id}/commands/{command_id}/result {status, detail}."""
    doc = _json_body(request)
    status = doc.get("status") if isinstance(doc, dict) else None
    if not isinstance(status, str) or status not in protocol.RESULT_STATUSES:
        return error(400, "bad_request", reason="status must be one of ok|rejected|failed|duplicate")
    detail = doc.get("detail") if isinstance(doc.get("detail"), dict) else {}
    command_id = request.match_info["command_id"]
    found = await run_db(request.app, request.app[STORE].post_result, request[MACHINE],
                         command_id, doc["status"], detail, request.app[CLOCK]())
    if not found:
        return error(404, "unknown_command")
    log.info("command_result", machine_id=request[MACHINE], command_id=command_id,
             status=doc["status"])
    return web.json_response({"command_id": command_id, "recorded": True})


async def _on_startup(app: web.Application) -> None:
    app[SECRETS].update(await run_db(app, app[STORE].secrets))


async def _on_shutdown(app: web.Application) -> None:
    app[CLOSING].set()
    wakeups: dict[str, asyncio.Event] = app[WAKEUPS]
    for machine_id in list(wakeups):
        wake(app, machine_id)


async def _on_cleanup(app: web.Application) -> None:
    await run_db(app, app[STORE].close)
    app[EXECUTOR].shutdown(wait=True)


def create_app(db_path: str, *, admin_token: str,
               clock: Callable[[], float] = time.time) -> web.Application:
    """The reference cloud app over the SQLite file `db_path`."""
    from sync.refcloud import admin, fleet  # noqa: PLC0415 - keeps route modules independent

    if len(admin_token) < 8:
        raise ValueError("admin_token must be at least 8 characters")
    app = web.Application(middlewares=[machine_auth, admin.admin_auth],
                          client_max_size=MAX_BODY_BYTES)
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refcloud-db")
    app[STORE] = Store(db_path)
    app[SECRETS] = {}
    app[NONCES] = signing.NonceCache()
    app[CLOCK] = clock
    app[WAKEUPS] = {}
    app[CHANGE_LISTENERS] = []
    app[CLOSING] = asyncio.Event()
    app[ADMIN_TOKEN] = admin_token
    m = "/v1/machines/{machine_id}"
    app.router.add_post(f"{m}/outbox", push_outbox)
    app.router.add_get(f"{m}/config", get_config)
    app.router.add_get(f"{m}/commands", poll_commands)
    app.router.add_post(f"{m}/commands/{{command_id}}/result", post_result)
    admin.add_routes(app)
    fleet.add_routes(app)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app

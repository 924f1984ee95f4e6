"""JSON API under /api/v1: same session and CSRF (X-CSRF-Token header) as the pages; JSON errors.

Documented in docs/web-api.md.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import re
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from edge.core.errors import LedgerError, SaleRefused
from edge.services.queries import Queries
from edge.services.technician import MAX_UNLOCK_MS, MIN_UNLOCK_MS, Technician, TechnicianRefused
from edge.web.auth import api_login, json_error, logout, session, session_of, technician
from edge.web.keys import HUB, QUERIES, TECHNICIAN
from edge.web.views import orders_csv

PREFIX = "/api/v1"
SLOT_ID = re.compile(r"[A-Za-z0-9_.-]{1,16}")  # a planogram slot id (edge/web/openapi.yaml SlotId)
OPENAPI = importlib.resources.files("edge.web").joinpath("openapi.yaml").read_bytes()  # the API's reference


def _q(request: web.Request) -> Queries:
    q: Queries = request.app[QUERIES]
    return q


def _tech(request: web.Request) -> Technician:
    t: Technician = request.app[TECHNICIAN]
    return t


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text='{"error":"unsupported_media_type","detail":"send application/json"}',
                                           content_type="application/json")
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack (a 500 before)
        raise web.HTTPBadRequest(text='{"error":"bad_request","detail":"invalid JSON (or nested too deep)"}',
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error":"bad_request","detail":"expected an object"}',
                                 content_type="application/json")
    return body


async def _run(request: web.Request, coro: Awaitable[Any]) -> web.Response:
    try:
        result = await coro
    except (SaleRefused, TechnicianRefused) as exc:
        status = {"not_available": 501, "not_found": 404, "bad_input": 400}.get(exc.reason, 409)
        return json_error(status, exc.reason, exc.detail)
    except LedgerError as exc:
        return json_error(503, "ledger", str(exc))
    request.app[HUB].poke()
    return web.json_response({"ok": True, "result": result})


def _need_confirm(body: dict[str, Any]) -> web.Response | None:
    return None if body.get("confirm") is True else json_error(400, "confirm_required", 'send "confirm": true')


@session
async def me(request: web.Request) -> web.Response:
    s = session_of(request)
    return web.json_response({"user": s.user.name, "role": s.user.role, "csrf": s.csrf})


async def openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.yaml: this API's OpenAPI description (viewers and technicians; a kiosk account
    reaches only its own routes)."""
    return web.Response(body=OPENAPI, content_type="application/yaml", charset="utf-8")


async def status(request: web.Request) -> web.Response:
    return web.json_response(await _q(request).dashboard())


async def temperature(request: web.Request) -> web.Response:
    t = _q(request).temperature()
    return web.json_response(t) if t is not None else json_error(501, "not_available", "no temperature service")


async def stock(request: web.Request) -> web.Response:
    return web.json_response({"slots": await _q(request).stock()})


async def alarm_history(request: web.Request) -> web.Response:
    return web.json_response({"alarms": await _q(request).alarm_history()})


async def picklist(request: web.Request) -> web.Response:
    return web.json_response(await _q(request).pick_list())


async def sales(request: web.Request) -> web.Response:
    q = _q(request)
    try:
        day = dt.date.fromisoformat(request.query.get("day", q.today())).isoformat()
    except ValueError:
        return json_error(400, "bad_request", "day must be YYYY-MM-DD")
    return web.json_response(await q.sales(day))


async def events(request: web.Request) -> web.Response:
    try:
        page, per_page = int(request.query.get("page", "1")), int(request.query.get("per_page", "50"))
    except ValueError:
        return json_error(400, "bad_request", "page and per_page are integers")
    return web.json_response(await _q(request).events(request.query.get("kind", "")[:64], page, per_page))


async def devices(request: web.Request) -> web.Response:
    q = _q(request)
    return web.json_response({"devices": q.devices(), "door": await q.door(), "capabilities": q.capabilities(),
                              "info": await q.device_info(),
                              "lockouts": await q.lockouts(), "frame_log": q.frame_log(100)})


@technician
async def restock(request: web.Request) -> web.Response:
    body = await _body(request)
    slot, count, best = body.get("slot_id"), body.get("count"), body.get("best_before")
    count_ok = count is None or (isinstance(count, int) and not isinstance(count, bool) and count >= 0)
    slot_ok = slot is None or (isinstance(slot, str) and SLOT_ID.fullmatch(slot) is not None)
    best_ok = best is None or (isinstance(best, str) and best != "")
    if not slot_ok or not count_ok or not best_ok or not isinstance(body.get("confirm", False), bool):
        return json_error(400, "bad_request", "slot_id: a slot id or null (all); count: integer >= 0 or null "
                                              "(capacity); best_before: YYYY-MM-DD or null; confirm: boolean")
    if slot is None and body.get("confirm") is not True:
        return json_error(400, "confirm_required", 'filling every slot needs "confirm": true')
    return await _run(request, _tech(request).restock(session_of(request).user.name, slot, count, best))


@technician
async def count(request: web.Request) -> web.Response:
    """POST /api/v1/vends/{order_id}/count {"counted": N}: settle a needs_count vend by a count."""
    body = await _body(request)
    counted = body.get("counted")
    if isinstance(counted, bool) or not isinstance(counted, int) or not 0 <= counted <= 100_000:
        return json_error(400, "bad_request", "counted: the integer number of items now in the slot (>= 0)")
    return await _run(request, _tech(request).settle_count(session_of(request).user.name,
                                                        request.match_info["order_id"], counted))


@technician
async def review(request: web.Request) -> web.Response:
    """POST /api/v1/review/{sid} {"decision": approve|correct|void, "basket": {sku: qty}, "confirm": true}."""
    body = await _body(request)
    if (bad := _need_confirm(body)) is not None:
        return bad
    decision, basket = body.get("decision"), body.get("basket")
    if not isinstance(decision, str) or (decision == "correct" and not isinstance(basket, dict)):
        return json_error(400, "bad_request", 'decision: "approve" | "correct" | "void"; basket {sku_id: qty} '
                                              "with correct")
    sid = request.match_info["sid"]
    return await _run(request, _tech(request).review_decide(session_of(request).user.name, sid, decision,
                                                         basket if decision == "correct" else None))


@technician
async def test_vend(request: web.Request) -> web.Response:
    body = await _body(request)
    if (bad := _need_confirm(body)) is not None:
        return bad
    if not isinstance(body.get("slot_id"), str) or not SLOT_ID.fullmatch(body["slot_id"]):
        return json_error(400, "bad_request", 'slot_id: a slot id such as "A1"')
    return await _run(request, _tech(request).test_vend(session_of(request).user.name, body["slot_id"]))


@technician
async def unlock(request: web.Request) -> web.Response:
    body = await _body(request)
    if (bad := _need_confirm(body)) is not None:
        return bad
    ms = body.get("ms", 8000)
    if not isinstance(ms, int) or isinstance(ms, bool) or not MIN_UNLOCK_MS <= ms <= MAX_UNLOCK_MS:
        return json_error(400, "bad_request", f"ms: {MIN_UNLOCK_MS}..{MAX_UNLOCK_MS}")
    return await _run(request, _tech(request).unlock_door(session_of(request).user.name, ms))


@technician
async def tare(request: web.Request) -> web.Response:
    body = await _body(request)
    if (bad := _need_confirm(body)) is not None:
        return bad
    shelf = body.get("shelf")
    if not (shelf is None or (isinstance(shelf, int) and not isinstance(shelf, bool) and shelf >= 0)):
        return json_error(400, "bad_request", "shelf: a shelf index >= 0, or null (all)")
    return await _run(request, _tech(request).tare(session_of(request).user.name, shelf))


@technician
async def clear_lockout(request: web.Request) -> web.Response:
    body = await _body(request)
    if (bad := _need_confirm(body)) is not None:
        return bad
    return await _run(request, _tech(request).clear_lockout(session_of(request).user.name))


@technician
async def read_registers(request: web.Request) -> web.Response:
    body = await _body(request)
    if (bad := _need_confirm(body)) is not None:
        return bad
    if not isinstance(body.get("device"), str):
        return json_error(400, "bad_request", "device required (a name from GET /api/v1/devices)")
    return await _run(request, _tech(request).read_registers(session_of(request).user.name, body["device"]))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(f"{PREFIX}/login", api_login)
    r.add_post(f"{PREFIX}/logout", logout)
    r.add_get(f"{PREFIX}/me", me)
    r.add_get(f"{PREFIX}/openapi.yaml", openapi)
    r.add_get(f"{PREFIX}/status", status)
    r.add_get(f"{PREFIX}/temperature", temperature)
    r.add_get(f"{PREFIX}/stock", stock)
    r.add_post(f"{PREFIX}/stock/restock", restock)
    r.add_post(f"{PREFIX}/vends/{{order_id}}/count", count)
    r.add_get(f"{PREFIX}/picklist", picklist)
    r.add_get(f"{PREFIX}/alarms", alarm_history)
    r.add_get(f"{PREFIX}/sales", sales)
    r.add_post(f"{PREFIX}/review/{{sid}}", review)
    r.add_get(f"{PREFIX}/events", events)
    r.add_get(f"{PREFIX}/devices", devices)
    r.add_post(f"{PREFIX}/devices/test-vend", test_vend)
    r.add_post(f"{PREFIX}/devices/unlock", unlock)
    r.add_post(f"{PREFIX}/devices/tare", tare)
    r.add_post(f"{PREFIX}/devices/clear-lockout", clear_lockout)
    r.add_post(f"{PREFIX}/devices/read-registers", read_registers)
    r.add_get(f"{PREFIX}/orders.csv", orders_csv)

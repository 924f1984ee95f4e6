"""HTML pages (server-rendered, Jinja2 with autoescape) and the form actions behind them.

Each action answers 303 back to its page with a one-shot message, so a reload never repeats it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from aiohttp import web

from edge.core.errors import LedgerError, SaleRefused
from edge.services.queries import Queries, money
from edge.services.technician import MAX_UNLOCK_MS, MIN_UNLOCK_MS, Technician, TechnicianRefused
from edge.web.auth import redirect, session_of, technician
from edge.web.chart import temperature_chart
from edge.web.keys import FLASH, HUB, JINJA, QUERIES, SESSION, TECHNICIAN, TOKEN, USER_NAME

log = structlog.get_logger(__name__)

NAV = [("/", "Dashboard"), ("/stock", "Stock"), ("/picklist", "Pick list"), ("/sales", "Sales"), ("/devices", "Devices"), ("/products", "Products"),
       ("/events", "Events"), ("/prices", "Prices"), ("/haccp", "HACCP"), ("/export", "Export")]


def q_of(request: web.Request) -> Queries:
    q: Queries = request.app[QUERIES]
    return q


def tech_of(request: web.Request) -> Technician:
    t: Technician = request.app[TECHNICIAN]
    return t


def render(request: web.Request, template: str, ctx: dict[str, Any] | None = None, *,
           status: int = 200) -> web.Response:
    sess = request.get(SESSION)
    flash = request.app[FLASH].pop(request.get(TOKEN, ""), None) if sess else None
    base = {"user": sess.user if sess else None, "csrf": sess.csrf if sess else "", "nav": NAV,
            "path": request.path, "flash": flash, "machine_id": request.app[QUERIES].m.machine_id}
    text = request.app[JINJA].get_template(template).render(**base, **(ctx or {}))
    return web.Response(text=text, content_type="text/html", status=status)


def flash(request: web.Request, level: str, text: str) -> None:
    request.app[FLASH][request[TOKEN]] = (level, text)

def _day(value: str, default: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat() if value else default
    except ValueError:
        return default


# ---- pages ------------------------------------------------------------------------------------

async def dashboard(request: web.Request) -> web.Response:
    d = await q_of(request).dashboard()
    return render(request, "dashboard.html", {"d": d, "chart": temperature_chart(d["temperature"], q_of(request).tz)})


async def stock_page(request: web.Request) -> web.Response:
    rows = await q_of(request).stock()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        key = f"Shelf {r['shelf']}" if r["shelf"] is not None else f"Row {r['slot_id'][0]}"
        groups.setdefault(key, []).append(r)
    return render(request, "stock.html", {"groups": groups, "low": sum(r["low"] for r in rows),
                                          "expiring": sum(r["expiry"] in ("near", "expired") for r in rows),
                                          "failures": await q_of(request).slot_failures(),
                                          "needs_count": await q_of(request).needs_count()})


async def picklist_page(request: web.Request) -> web.Response:
    q = q_of(request)
    return render(request, "picklist.html", {"p": await q.pick_list(), "today": q.today()})


async def sales_page(request: web.Request) -> web.Response:
    q = q_of(request)
    day = _day(request.query.get("day", ""), q.today())
    return render(request, "sales.html", {"s": await q.sales(day), "day": day})


async def evidence_image(request: web.Request) -> web.StreamResponse:
    """GET /evidence/{sid}/{name}: a review-queue JPEG; names are checked against fixed patterns."""
    path = q_of(request).evidence_path(request.match_info["sid"], request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text="not found")
    return web.FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


async def devices_page(request: web.Request) -> web.Response:
    q = q_of(request)
    slots = [r["slot_id"] for r in await q.stock() if r["shelf"] is None]
    return render(request, "devices.html", {"devices": q.devices(), "frames": q.frame_log(40), "slots": slots,
                                            "info": await q.device_info(),
                                            "caps": q.capabilities(), "lockouts": await q.lockouts(),
                                            "door": await q.door()})


async def events_page(request: web.Request) -> web.Response:
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        page = 1
    q = q_of(request)
    ev = await q.events(request.query.get("kind", "")[:64], page, 50)
    pages = max(1, -(-ev["total"] // ev["per_page"]))
    return render(request, "events.html", {"ev": ev, "pages": pages, "alarms": await q.alarm_history(50)})


async def export_page(request: web.Request) -> web.Response:
    today = q_of(request).today()
    return render(request, "export.html", {"today": today,
                                           "week_ago": (dt.date.fromisoformat(today) - dt.timedelta(days=7)).isoformat()})


async def orders_csv(request: web.Request) -> web.Response:
    """Orders CSV for start..end (local days, inclusive); pages and the API share this handler."""
    q = q_of(request)
    try:
        start = dt.date.fromisoformat(request.query.get("start", q.today())).isoformat()
        end = dt.date.fromisoformat(request.query.get("end", start)).isoformat()
        if end < start or (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days > 366:
            raise ValueError("range")
    except ValueError:
        raise web.HTTPBadRequest(text="start/end must be ISO dates, start <= end, at most 366 days") from None
    body = await q.orders_csv(start, end)
    await tech_of(request).audit(request[USER_NAME], "export_orders", start=start, end=end)
    return web.Response(text=body, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="orders_{start}_{end}.csv"'})


# ---- actions ----------------------------------------------------------------------------------

async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _act(request: web.Request, back: str, what: str, coro: Any) -> web.Response:
    """Run one technician action; success or refusal becomes the message shown after the redirect."""
    try:
        result = await coro
    except (SaleRefused, TechnicianRefused) as exc:
        flash(request, "error", f"{what}: refused ({exc.reason}) {exc.detail}")
        return redirect(back)
    except (LedgerError, ValueError) as exc:
        flash(request, "error", f"{what}: failed: {exc}")
        return redirect(back)
    request.app[HUB].poke()
    flash(request, "ok", f"{what}: {result}")
    return redirect(back)


def _confirmed(form: dict[str, str]) -> bool:
    return form.get("confirm") == "yes"


@technician
async def restock_action(request: web.Request) -> web.Response:
    form = await _form(request)
    slot, raw = form.get("slot_id", "").strip().upper(), form.get("count", "").strip()
    if not slot:
        flash(request, "error", "restock: choose a slot")
        return redirect("/stock")
    if raw and not (raw.isascii() and raw.isdigit()):
        flash(request, "error", f"restock {slot}: count must be a whole number >= 0, or empty for capacity")
        return redirect("/stock")
    count = int(raw) if raw else None
    best = form.get("best_before", "").strip() or None
    result = tech_of(request).restock(session_of(request).user.name, slot, count, best)
    return await _act(request, "/stock", f"restock {slot}",
                      _fmt(result, lambda r: f"now {r.get(slot)}" + (f", best before {best}" if best else "")))


@technician
async def review_action(request: web.Request) -> web.Response:
    """POST /review/{sid}: approve the best guess, correct the basket (qty_<sku> fields) or void."""
    form = await _form(request)
    sid, action = request.match_info["sid"], form.get("decision", "")
    if not _confirmed(form):
        flash(request, "error", f"review {sid}: tick the confirmation box")
        return redirect("/sales")
    basket = None
    if action == "correct":
        raw = {k[4:]: v.strip() for k, v in form.items() if k.startswith("qty_") and v.strip()}
        if not all(v.isascii() and v.isdigit() for v in raw.values()):
            flash(request, "error", f"review {sid}: quantities must be whole numbers")
            return redirect("/sales")
        basket = {k: int(v) for k, v in raw.items()}
    result = tech_of(request).review_decide(session_of(request).user.name, sid, action, basket)
    return await _act(request, "/sales", f"review {sid}",
                      _fmt(result, lambda o: f"{o['status']}, {money(o['total'], o['currency'])}"))


@technician
async def count_action(request: web.Request) -> web.Response:
    """POST /stock/count: the items counted in the slot of a vend nobody could tell the outcome of."""
    form = await _form(request)
    order_id, raw = form.get("order_id", "").strip(), form.get("counted", "").strip()
    if not order_id or not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        flash(request, "error", "count: enter the number of items now in the slot (a whole number >= 0)")
        return redirect("/stock")
    result = tech_of(request).settle_count(session_of(request).user.name, order_id, int(raw))
    return await _act(request, "/stock", f"count for order {order_id}",
                      _fmt(result, lambda o: "item fell, order completed" if o["status"] == "completed"
                           else "item did not fall, order failed" + (" (refund due)" if o["refund_due"] else "")))


@technician
async def fill_all_action(request: web.Request) -> web.Response:
    if not _confirmed(await _form(request)):
        flash(request, "error", "fill all: tick the confirmation box")
        return redirect("/stock")
    result = tech_of(request).restock(session_of(request).user.name, None, None)
    return await _act(request, "/stock", "fill all", _fmt(result, lambda r: f"{len(r)} slots filled"))


@technician
async def test_vend_action(request: web.Request) -> web.Response:
    form = await _form(request)
    slot = form.get("slot_id", "").strip().upper()
    if not _confirmed(form) or not slot:
        flash(request, "error", "test vend: choose a slot and tick the confirmation box")
        return redirect("/devices")
    result = tech_of(request).test_vend(session_of(request).user.name, slot)
    return await _act(request, "/devices", f"test vend {slot}",
                      _fmt(result, lambda o: f"{o['status']} {o.get('reason') or ''}".strip()))


@technician
async def unlock_action(request: web.Request) -> web.Response:
    form = await _form(request)
    if not _confirmed(form):
        flash(request, "error", "unlock: tick the confirmation box")
        return redirect("/devices")
    ms = int(form["ms"]) if form.get("ms", "").isdigit() else 8000
    result = tech_of(request).unlock_door(session_of(request).user.name, max(MIN_UNLOCK_MS, min(ms, MAX_UNLOCK_MS)))
    return await _act(request, "/devices", "unlock door", _fmt(result, lambda _: "unlocked"))


@technician
async def tare_action(request: web.Request) -> web.Response:
    form = await _form(request)
    if not _confirmed(form):
        flash(request, "error", "tare: tick the confirmation box (shelves must be empty)")
        return redirect("/devices")
    shelf = int(form["shelf"]) if form.get("shelf", "").isdigit() else None
    result = tech_of(request).tare(session_of(request).user.name, shelf)
    return await _act(request, "/devices", "tare", _fmt(result, lambda _: "done"))


@technician
async def clear_lockout_action(request: web.Request) -> web.Response:
    if not _confirmed(await _form(request)):
        flash(request, "error", "clear lockout: tick the confirmation box")
        return redirect("/devices")
    result = tech_of(request).clear_lockout(session_of(request).user.name)
    return await _act(request, "/devices", "clear food-safety lockout", _fmt(result, str))


async def _fmt(coro: Any, fmt: Any) -> str:
    return str(fmt(await coro))


@technician
async def read_registers_action(request: web.Request) -> web.Response:
    form = await _form(request)
    device = form.get("device", "")
    if not _confirmed(form) or not device:
        flash(request, "error", "read registers: choose a device and tick the confirmation box")
        return redirect("/devices")
    result = tech_of(request).read_registers(session_of(request).user.name, device)
    return await _act(request, "/devices", f"registers of {device}",
                      _fmt(result, lambda v: ", ".join(f"{k}={x}" for k, x in v.items())))

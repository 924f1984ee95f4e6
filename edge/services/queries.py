"""Read models for the diagnostics page, built on the `Machine` façade and the ledger's reports.

The web layer reads the machine through `Queries` and acts through `edge.services.technician`. Optional
services come from the typed registry `machine.services` (None when this machine has no such service):
the page shows "not available" instead of failing. Every SQL statement is in `edge.ledger.reports`.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import pathlib
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from drivers.errors import DeviceError
from drivers.modbus.device import ModbusDevice
from drivers.vend_board import DoorState, VendBoard
from edge.clock import SystemClock
from edge.config import TemperatureConfig
from edge.core.food_safety import expiry
from edge.ledger import fresh, repo, reports
from edge.services import audit, diagnostics
from edge.services.accounts import Accounts
from edge.services.machine import Machine

log = structlog.get_logger(__name__)

DOOR_CACHE_S = 2.0        # the board is asked at most this often; unsolicited changes update at once
EVENTS_PAGE_MAX = 200
EVENTS_PAGE_LAST = 10**9  # pages past this are empty anyway; keeps (page - 1) * per_page inside int64
LOW_FRACTION = 0.25       # a slot at or below a quarter of its capacity is "low"
READ_CACHE_S = 1.0        # how stale a page may be (actions invalidate at once)


class Queries:
    """One per web app: read models with small caches (technician actions invalidate them)."""

    def __init__(self, machine: Machine, *, session_clock: SystemClock | None = None,
                 tz: zoneinfo.ZoneInfo | None = None) -> None:
        self.m = machine
        self.tz = tz or zoneinfo.ZoneInfo("UTC")  # days (today, sales, exports) are the machine's local days
        self.users = Accounts(machine.db, session_clock)
        self._door: dict[str, Any] | None = None
        self._door_at = 0.0
        self._door_lock = asyncio.Lock()
        self._cache: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}
        machine.board.on_event(self._on_door)

    # ---- helpers -----------------------------------------------------------------------------

    def _now(self) -> float:
        return self.m.db.clock.wall()

    def now(self) -> float:
        """Wall time (epoch seconds) from the ledger's clock."""
        return self._now()

    def today(self) -> str:
        return dt.datetime.fromtimestamp(self._now(), self.tz).date().isoformat()

    def _on_door(self, state: DoorState) -> None:
        self._door = {"closed": bool(state.closed), "locked": bool(state.locked), "source": "vend_board"}
        self._door_at = time.monotonic()

    def invalidate(self) -> None:
        """Forget cached read models (after an action, so the next page shows its effect)."""
        self._cache.clear()

    async def _cached(self, key: tuple[Any, ...], factory: Callable[[], Awaitable[Any]]) -> Any:
        """Read models are shared for READ_CACHE_S: fifty phones polling cost one set of queries, and the
        loop stays free for sales. Concurrent misses wait for the same computation."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return await asyncio.shield(hit[1])
        fut: asyncio.Future[Any] = asyncio.ensure_future(factory())
        self._cache[key] = (now + READ_CACHE_S, fut)
        try:
            return await asyncio.shield(fut)
        except Exception:
            if self._cache.get(key, (0, None))[1] is fut:
                del self._cache[key]
            raise

    # ---- dashboard ---------------------------------------------------------------------------

    async def door(self) -> dict[str, Any] | None:
        svc = self.m.services.door
        if svc is not None:
            return dict(svc.state())
        if time.monotonic() - self._door_at < DOOR_CACHE_S or not self.m.board.connected:
            return self._door
        async with self._door_lock:  # one board request however many pages ask at once
            if time.monotonic() - self._door_at >= DOOR_CACHE_S:
                self._door_at = time.monotonic()
                try:
                    async with asyncio.timeout(1.0):
                        self._on_door(await self.m.board.door_state())
                except (TimeoutError, DeviceError) as exc:  # the page shows the last known state
                    log.debug("door_state_unavailable", error=f"{type(exc).__name__}: {exc}")
        return self._door

    def temperature(self, since_s: float = 24 * 3600.0, max_points: int = 288) -> dict[str, Any] | None:
        """Last 24 h (downsampled for the chart) and the latest reading, or None without the service."""
        svc = self.m.services.temperature
        if svc is None:
            return None
        rows = list(svc.series(self._now() - since_s))
        step = max(1, len(rows) // max_points)
        points = [[round(float(r[0]), 1), _num(r[1]), _num(r[2]), bool(r[3])] for r in rows[::step]]
        if rows and points[-1][0] != round(float(rows[-1][0]), 1):
            r = rows[-1]
            points.append([round(float(r[0]), 1), _num(r[1]), _num(r[2]), bool(r[3])])
        last = points[-1] if points else None
        st = svc.status()
        return {"points": points, "cabinet_c": last[1] if last else None, "evaporator_c": last[2] if last else None,
                "compressor_on": last[3] if last else None, "setpoint_c": st.get("setpoint_c"),
                **_alarm_limits(svc.config), "duty_cycle_1h": st.get("duty_cycle_1h"),
                "max_cabinet_c": st.get("max_cabinet_c"),
                "food_safety_locked": bool((st.get("food_safety") or {}).get("locked", False))}

    async def sync_status(self) -> dict[str, Any]:
        outbox = await reports.outbox_state(self.m.db)
        svc = self.m.services.sync
        online = bool(svc.status.get("online", False)) if svc is not None else False
        return {"enabled": svc is not None, "online": online,
                "state": "not configured" if svc is None else ("online" if online else "offline"), **outbox}

    def devices(self) -> list[dict[str, Any]]:
        """Each device with connection state and error counters (board first, then optional services)."""
        b = self.m.board
        out = [{"name": "vend_board", "online": bool(b.connected), "counters": dict(b.counters),
                "seen_s_ago": _board_seen_ago(b), "points": {}}]
        pay = self.m.services.payment
        if pay is not None:  # the reader is one device ("payment" sorts before "plant.*", as it always did)
            out.append({"name": "payment", "online": bool(pay.connected), "counters": dict(pay.counters),
                        "seen_s_ago": None, "points": {}})
        for dev_name, dev in self.modbus_devices().items():
            seen = dev.last_seen  # drivers stamp it with time.monotonic()
            out.append({"name": dev_name, "online": bool(dev.online), "counters": dict(dev.counters),
                        "seen_s_ago": round(time.monotonic() - seen, 1) if isinstance(seen, float) else None,
                        "points": plain(dev.values)})
        return out

    def modbus_devices(self) -> dict[str, ModbusDevice]:
        """The plant's Modbus devices by the name the page shows ("plant.<bus>.<device>")."""
        plant = self.m.services.plant
        return {f"plant.{k}": v for k, v in plant.devices.items()} if plant is not None else {}

    async def dashboard(self) -> dict[str, Any]:
        return await self._cached(("dashboard",), self._dashboard)  # type: ignore[no-any-return]

    async def _dashboard(self) -> dict[str, Any]:
        status = await self.m.status()
        sales = await self.sales_summary(self.today())
        return {**status, "door": await self.door(), "temperature": self.temperature(max_points=96),
                "sync": await self.sync_status(), "devices": self.devices(), "sales_today": sales,
                "lockouts": await self.lockouts(), "low_stock": sum(1 for s in await self.stock() if s["low"]),
                "counters": audit.service_counters(self.m)}

    # ---- stock and sales ---------------------------------------------------------------------

    async def stock(self) -> list[dict[str, Any]]:
        return await self._cached(("stock",), self._stock)  # type: ignore[no-any-return]

    async def _stock(self) -> list[dict[str, Any]]:
        planogram = await repo.current_planogram(self.m.db)
        rows = await repo.stock(self.m.db)
        dates, today = await fresh.best_before(self.m.db), dt.date.fromisoformat(self.today())
        out = []
        for slot_id, r in rows.items():
            sku = planogram.skus.get(r.sku_id) if planogram else None
            slot = planogram.slots.get(slot_id) if planogram else None
            out.append({"slot_id": slot_id, "sku_id": r.sku_id, "name": sku.name if sku else r.sku_id,
                        "price": sku.price.amount if sku else None, "currency": sku.price.currency if sku else "",
                        "count": r.count, "capacity": r.capacity, "disabled": r.disabled,
                        "disabled_reason": r.disabled_reason, "shelf": slot.shelf if slot else None,
                        "low": r.count <= max(1, int(r.capacity * LOW_FRACTION)),
                        "best_before": dates.get(slot_id), "expiry": expiry(dates.get(slot_id), today, r.count),
                        # take-and-go: may hold another product (a session put something in) until restocked
                        "mixed": bool(r.mixed and slot is not None and slot.shelf is not None)})
        return out

    async def pick_list(self) -> dict[str, Any]:
        """What to bring on the next visit: per slot, par level (the slot's capacity) minus what is in it,
        plus what must be replaced (a lane at or near its best-before: all of it); totals per product.
        Disabled slots are listed too (the technician fixes and fills them)."""
        lines = []
        for r in await self.stock():
            replace = r["count"] if r["expiry"] in ("near", "expired") else 0  # fresh food past or near its date
            lines.append({"slot_id": r["slot_id"], "sku_id": r["sku_id"], "name": r["name"], "count": r["count"],
                          "par": r["capacity"], "bring": max(0, r["capacity"] - r["count"]) + replace,
                          "replace": replace, "best_before": r["best_before"], "expiry": r["expiry"],
                          "disabled": r["disabled"]})
        totals: dict[str, dict[str, Any]] = {}
        for ln in lines:
            if ln["bring"]:
                t = totals.setdefault(ln["sku_id"], {"sku_id": ln["sku_id"], "name": ln["name"], "bring": 0})
                t["bring"] += ln["bring"]
        return {"lines": [ln for ln in lines if ln["bring"]], "totals": sorted(totals.values(), key=lambda t: t["name"]),
                "items": sum(t["bring"] for t in totals.values())}

    async def orders(self, start: str, end: str, *, failed_only: bool = False,
                     limit: int = 10_000) -> list[dict[str, Any]]:
        """Orders created on local days start..end (inclusive), newest first, with their lines."""
        lo, hi = _day_bounds(start, end, self.tz)
        return await reports.orders(self.m.db, lo, hi, failed_only=failed_only, limit=limit)

    async def sales_summary(self, day: str) -> dict[str, Any]:
        lo, hi = _day_bounds(day, day, self.tz)
        counts = await reports.sales_counts(self.m.db, lo, hi)
        planogram = await repo.current_planogram(self.m.db)
        currency = next((k.price.currency for k in planogram.skus.values()), "") if planogram else ""
        return {"day": day, "currency": currency, **counts}

    async def sales(self, day: str) -> dict[str, Any]:
        return await self._cached(("sales", day), lambda: self._sales(day))  # type: ignore[no-any-return]

    async def _sales(self, day: str) -> dict[str, Any]:
        refunds = await reports.refunds_due(self.m.db, 200)
        stock = await self.stock()
        names = {r["sku_id"]: r["name"] for r in stock}
        shelf_products = sorted({(r["name"], r["sku_id"]) for r in stock if r["shelf"] is not None})
        return {"summary": await self.sales_summary(day), "names": names,
                "products": [{"sku_id": sku, "name": name} for name, sku in shelf_products],
                "orders": await self.orders(day, day, limit=500),
                "failed": await self.orders(day, day, failed_only=True, limit=200),
                "refunds_due": refunds, "review_queue": await self.review_queue()}

    def evidence_path(self, session_id: str, name: str) -> pathlib.Path | None:
        """Path of one take-and-go evidence image, or None (no service, bad name, not kept)."""
        svc = self.m.services.takeandgo
        return svc.evidence.path(session_id, name) if svc is not None else None

    async def products(self) -> dict[str, Any] | None:  # the Products page; None without enrollment
        svc = self.m.services.enrollment
        return svc.products(await repo.current_planogram(self.m.db)) if svc is not None else None

    async def review_queue(self) -> list[dict[str, Any]] | None:
        svc = self.m.services.takeandgo
        if svc is None:
            return None
        return [dict(item) for item in await svc.review_queue()]

    async def orders_csv(self, start: str, end: str) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["order_id", "created_at", "kind", "status", "total_minor", "currency", "refund_due", "reason",
                    "payment_ref", "lines"])
        for o in reversed(await self.orders(start, end, limit=1_000_000)):
            w.writerow([o["order_id"], o["created_at"], o["kind"], o["status"], o["total_amount"], o["currency"],
                        int(o["refund_due"]), o["reason"], _csv_safe(o["payment_ref"]),
                        " ".join(f"{ln['slot_id']}:{ln['sku_id']}x{ln['qty']}" for ln in o["lines"])])
        return buf.getvalue()

    # ---- events, alarms, lockouts ------------------------------------------------------------

    async def events(self, kind: str = "", page: int = 1, per_page: int = 50) -> dict[str, Any]:
        per_page = max(1, min(EVENTS_PAGE_MAX, per_page))
        page = max(1, min(EVENTS_PAGE_LAST, page))  # SQLite's OFFSET is a signed 64-bit integer
        return await self._cached(("events", kind, page, per_page),  # type: ignore[no-any-return]
                                  lambda: self._events(kind, page, per_page))

    async def _events(self, kind: str, page: int, per_page: int) -> dict[str, Any]:
        found = await reports.events_page(self.m.db, kind, per_page, (page - 1) * per_page)
        return {"kind": kind, "page": page, "per_page": per_page, **found}

    async def alarm_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Alarm episodes, newest first, each with a human duration ("3 h 12 min", or "active")."""
        return [{**ep, "duration": "active" if ep["cleared_at"] is None else human_duration(ep["duration_s"])}
                for ep in await reports.alarm_history(self.m.db, limit)]

    async def slot_failures(self, days: int = 30) -> list[dict[str, Any]]:
        """Failed vends per slot and reason over the last `days` days, with the product's name."""
        since = (dt.date.fromisoformat(self.today()) - dt.timedelta(days=days)).isoformat()
        names = {r["slot_id"]: r["name"] for r in await self.stock()}
        return [{**r, "name": names.get(r["slot_id"], "")} for r in await reports.slot_failures(self.m.db, since)]

    async def needs_count(self) -> list[dict[str, Any]]:
        """Vends the board could not account for, waiting for a technician's count (issue 12)."""
        names = {r["slot_id"]: r for r in await self.stock()}
        return [{**e, "name": names[e["slot_id"]]["name"] if e["slot_id"] in names else "",
                 "ledger_count": names[e["slot_id"]]["count"] if e["slot_id"] in names else None}
                for e in await self.m.vends_needing_count()]

    async def lockouts(self) -> list[dict[str, Any]]:
        return await reports.open_lockouts(self.m.db)

    def frame_log(self, n: int = 50) -> list[dict[str, Any]]:
        """The vend board's last frames, each decoded (message, seq, fields) next to its bytes."""
        log_ = list(self.m.board.frame_log)[-n:]
        return [{"at": round(at, 3), "dir": d, "hex": h, **diagnostics.decode_frame(h)} for at, d, h in log_]

    async def device_info(self) -> dict[str, Any]:
        """Board firmware, network (interfaces, cloud link) and payment reader, "unknown" where not known."""
        sync = await self.sync_status()
        svc = self.m.services.sync
        st = svc.status if svc is not None else {}
        return {"board": diagnostics.board_info(self.m.board, self.frame_log(200)),
                "network": {"interfaces": diagnostics.network_state(), "cloud": sync["state"],
                            "last_contact": st.get("last_ack_at") or sync["last_ack"],
                            "last_error": st.get("last_error") or "", "transport": st.get("transport") or ""},
                "payment": diagnostics.payment_state(self.m.services.payment)}

    def capabilities(self) -> dict[str, bool]:
        sv = self.m.services
        return {"door": sv.door is not None, "tare": sv.shelves is not None, "registers": bool(self.modbus_devices()),
                "food_safety": sv.temperature is not None, "temperature": sv.temperature is not None,
                "takeandgo": sv.takeandgo is not None}


def human_duration(seconds: float | None) -> str:
    """45 s, 12 min, 3 h 12 min, 2 d 5 h: what a person reads at a glance."""
    if seconds is None:
        return "–"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def money(amount: int | None, currency: str = "") -> str:
    """Minor units as the page shows them: 1234 -> "12.34 EUR" (the live stream uses the same text)."""
    if amount is None:
        return "–"
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d} {currency}".strip()


def plain(values: Any) -> dict[str, Any]:
    """Register values as JSON-safe scalars."""
    out: dict[str, Any] = {}
    for k, v in dict(values or {}).items():
        out[str(k)] = v if isinstance(v, (bool, int, str)) or v is None else _num(v)
    return out


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 2) if f == f else None  # NaN -> None


def _alarm_limits(cfg: TemperatureConfig) -> dict[str, float | None]:
    """The temperature alarm limits from the service's config (None where a value is not a number)."""
    return {"high_alarm_c": _num(cfg.high_alarm_c), "low_alarm_c": _num(cfg.low_alarm_c),
            "food_safety_limit_c": _num(cfg.food_safety_limit_c)}


def _board_seen_ago(board: VendBoard) -> float | None:
    rx = [at for at, d, _ in list(board.frame_log)[-20:] if d == "rx"]
    return round(time.time() - rx[-1], 1) if rx else None


def _day_bounds(start: str, end: str, tz: dt.tzinfo = dt.UTC) -> tuple[str, str]:
    """Local days start..end (ISO dates, inclusive, in `tz`) → [start 00:00, end+1 00:00) as stored
    timestamps compare (UTC ISO strings)."""
    a = dt.date.fromisoformat(start)
    b = dt.date.fromisoformat(end)
    if b < a:
        raise ValueError("end before start")
    return _utc_midnight(a, tz, "0000"), (_utc_midnight(b + dt.timedelta(days=1), tz, "9999-99")
                                         if b < dt.date.max else f"{b.isoformat()}T99")


def _utc_midnight(day: dt.date, tz: dt.tzinfo, outside: str) -> str:
    """Local midnight of `day` as a stored UTC timestamp; `outside` when that instant is past year 1/9999
    (9999-12-31 has no next day: its end is a string after every stored timestamp of that day)."""
    try:
        utc = dt.datetime.combine(day, dt.time(), tz).astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return outside
    return utc.replace(tzinfo=None).isoformat(timespec="seconds")


def _csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection) in free-text columns."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text

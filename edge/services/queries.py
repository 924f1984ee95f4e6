"""Read models and technician actions for the diagnostics page, built on the `Machine` façade.

The web layer talks to the machine only through `Queries` (reads) and its action methods (each one
audited). Optional services live in `machine.extras` and are used by duck type; a missing one is
reported as not available instead of failing:

- ``extras["temperature"]``: ``series(since) -> [(wall_ts, cabinet_c, evap_c, compressor_on)]``,
  ``status() -> dict`` (duty cycle, food safety), ``async clear_lockout(actor) -> bool``
- ``extras["door"]``: ``async unlock(ms, reason, actor=...)``, ``state() -> {closed, locked, open_since}``
- ``extras["shelves"]``: ``async tare(shelf: int)``, ``shelves`` (the shelf numbers)
- ``extras["plant"]``: ``devices: {name: device}`` (each with ``online``, ``last_seen``, ``counters``)
- ``extras["takeandgo"]``: ``review_queue() -> list[dict]`` (items may carry ``evidence`` URLs)
- ``extras["sync"]``: ``status -> {"online": bool, ...}`` (the `SyncClient` property)
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import inspect
import io
import json
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from drivers.errors import DeviceError
from edge.clock import SystemClock
from edge.core.errors import SaleRefused
from edge.ledger import fresh, repo, reports
from edge.ledger.users import UserStore, audit
from edge.services import diagnostics, review
from edge.services.machine import Machine

log = structlog.get_logger(__name__)

DOOR_CACHE_S = 2.0        # the board is asked at most this often; unsolicited changes update at once
EVENTS_PAGE_MAX = 200
EVENTS_PAGE_LAST = 10**9  # pages past this are empty anyway; keeps (page - 1) * per_page inside int64
MAX_SHELF_LIFE_DAYS = 366  # a best-before further ahead is a typing error
NEAR_EXPIRY_DAYS = 1      # a lane whose best-before is today or tomorrow is "near"
LOW_FRACTION = 0.25       # a slot at or below a quarter of its capacity is "low"
READ_CACHE_S = 1.0        # how stale a page may be (actions invalidate at once)


class NotAvailable(SaleRefused):
    """The optional service an action needs is not part of this machine."""

    def __init__(self, service: str) -> None:
        super().__init__("not_available", f"{service} is not available on this machine")


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class Queries:
    """One per web app: read models with small caches, and the audited technician actions."""

    def __init__(self, machine: Machine, *, session_clock: SystemClock | None = None,
                 tz: zoneinfo.ZoneInfo | None = None) -> None:
        self.m = machine
        self.tz = tz or zoneinfo.ZoneInfo("UTC")  # days (today, sales, exports) are the machine's local days
        self.users = UserStore(machine.db, session_clock)
        self._door: dict[str, Any] | None = None
        self._door_at = 0.0
        self._door_lock = asyncio.Lock()
        self._cache: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}
        on_event: Callable[[Callable[[Any], None]], None] | None = getattr(machine.board, "on_event", None)
        if on_event is not None:
            on_event(self._on_door)

    # ---- helpers -----------------------------------------------------------------------------

    def _now(self) -> float:
        return self.m.db.clock.wall()

    def now(self) -> float:
        """Wall time (epoch seconds) from the ledger's clock."""
        return self._now()

    def today(self) -> str:
        return dt.datetime.fromtimestamp(self._now(), self.tz).date().isoformat()

    def _on_door(self, state: Any) -> None:
        self._door = {"closed": bool(state.closed), "locked": bool(state.locked), "source": "vend_board"}
        self._door_at = time.monotonic()

    async def audit(self, actor: str, action: str, outcome: str = "ok", **detail: Any) -> None:
        self.invalidate()
        async with self.m.db.tx() as tx:
            await audit(tx, actor, action, outcome, **detail)

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
        svc = self.m.extras.get("door")
        if svc is not None and hasattr(svc, "state"):
            return dict(await _maybe_await(svc.state()))
        if time.monotonic() - self._door_at < DOOR_CACHE_S or not getattr(self.m.board, "connected", False):
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
        svc = self.m.extras.get("temperature")
        if svc is None or not hasattr(svc, "series"):
            return None
        rows = list(svc.series(self._now() - since_s))
        step = max(1, len(rows) // max_points)
        points = [[round(float(r[0]), 1), _num(r[1]), _num(r[2]), bool(r[3])] for r in rows[::step]]
        if rows and points[-1][0] != round(float(rows[-1][0]), 1):
            r = rows[-1]
            points.append([round(float(r[0]), 1), _num(r[1]), _num(r[2]), bool(r[3])])
        last = points[-1] if points else None
        st: dict[str, Any] = svc.status() if callable(getattr(svc, "status", None)) else {}
        return {"points": points, "cabinet_c": last[1] if last else None, "evaporator_c": last[2] if last else None,
                "compressor_on": last[3] if last else None, "setpoint_c": st.get("setpoint_c"),
                **_alarm_limits(getattr(svc, "config", None)), "duty_cycle_1h": st.get("duty_cycle_1h"),
                "food_safety_locked": bool((st.get("food_safety") or {}).get("locked", False))}

    async def sync_status(self) -> dict[str, Any]:
        row = await self.m.db.fetchone(
            "SELECT SUM(acked_at IS NULL AND parked_reason IS NULL) AS backlog, "
            "SUM(parked_reason IS NOT NULL) AS parked, MAX(acked_at) AS last_ack FROM outbox")
        svc = self.m.extras.get("sync")
        online = _sync_online(svc)
        return {"enabled": svc is not None, "online": online,
                "state": "not configured" if svc is None else ("online" if online else "offline"),
                "backlog": int(row["backlog"] or 0) if row else 0, "parked": int(row["parked"] or 0) if row else 0,
                "last_ack": row["last_ack"] if row else None}

    def devices(self) -> list[dict[str, Any]]:
        """Each device with connection state and error counters (board first, then optional services)."""
        b = self.m.board
        out = [{"name": "vend_board", "online": bool(getattr(b, "connected", False)),
                "counters": dict(getattr(b, "counters", {})), "seen_s_ago": _board_seen_ago(b), "points": {}}]
        for name, svc in sorted(self.m.extras.items()):
            for dev_name, dev in _devices_of(name, svc):
                seen = getattr(dev, "last_seen", None)  # drivers stamp it with time.monotonic()
                out.append({"name": dev_name, "online": _online(dev), "counters": dict(getattr(dev, "counters", {})),
                            "seen_s_ago": round(time.monotonic() - seen, 1) if isinstance(seen, float) else None,
                            "points": _plain(getattr(dev, "values", {}))})
        return out

    async def dashboard(self) -> dict[str, Any]:
        return await self._cached(("dashboard",), self._dashboard)  # type: ignore[no-any-return]

    async def _dashboard(self) -> dict[str, Any]:
        status = await self.m.status()
        sales = await self.sales_summary(self.today())
        return {**status, "door": await self.door(), "temperature": self.temperature(max_points=96),
                "sync": await self.sync_status(), "devices": self.devices(), "sales_today": sales,
                "lockouts": await self.lockouts(), "low_stock": sum(1 for s in await self.stock() if s["low"])}

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
                        "best_before": dates.get(slot_id), "expiry": expiry(dates.get(slot_id), today, r.count)})
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

    async def orders(self, start: str, end: str, *, where: str = "", limit: int = 10_000) -> list[dict[str, Any]]:
        """Orders created on days start..end (UTC, inclusive), newest first, with their lines."""
        lo, hi = _day_bounds(start, end, self.tz)
        rows = await self.m.db.fetchall(
            f"SELECT * FROM orders WHERE created_at >= ? AND created_at < ? {where} ORDER BY seq DESC LIMIT ?",
            (lo, hi, limit))
        lines = await self.m.db.fetchall(
            "SELECT l.order_id, l.sku_id, l.slot_id, l.qty, l.unit_price FROM order_lines l JOIN orders o "
            "ON o.order_id = l.order_id WHERE o.created_at >= ? AND o.created_at < ? ORDER BY l.line_no", (lo, hi))
        by_order: dict[str, list[dict[str, Any]]] = {}
        for ln in lines:
            by_order.setdefault(ln["order_id"], []).append(dict(ln))
        return [{**dict(r), "refund_due": bool(r["refund_due"]), "lines": by_order.get(r["order_id"], [])}
                for r in rows]

    async def sales_summary(self, day: str) -> dict[str, Any]:
        lo, hi = _day_bounds(day, day, self.tz)
        row = await self.m.db.fetchone(
            "SELECT COUNT(*) AS n, SUM(status='completed' AND kind!='test_vend') AS sold, "
            "SUM(CASE WHEN status='completed' THEN total_amount ELSE 0 END) AS revenue, "
            "SUM(status='failed') AS failed FROM orders WHERE created_at >= ? AND created_at < ?", (lo, hi))
        due = await self.m.db.fetchone("SELECT COUNT(*) AS n FROM orders WHERE refund_due=1")
        assert row is not None  # an aggregate always answers one row
        planogram = await repo.current_planogram(self.m.db)
        currency = next((k.price.currency for k in planogram.skus.values()), "") if planogram else ""
        return {"day": day, "currency": currency, "orders": row["n"] or 0, "sold": row["sold"] or 0, "revenue": row["revenue"] or 0,
                "failed": row["failed"] or 0, "refunds_due": due["n"] if due else 0}

    async def sales(self, day: str) -> dict[str, Any]:
        return await self._cached(("sales", day), lambda: self._sales(day))  # type: ignore[no-any-return]

    async def _sales(self, day: str) -> dict[str, Any]:
        refunds = await self.m.db.fetchall("SELECT * FROM orders WHERE refund_due=1 ORDER BY seq DESC LIMIT 200")
        stock = await self.stock()
        names = {r["sku_id"]: r["name"] for r in stock}
        shelf_products = sorted({(r["name"], r["sku_id"]) for r in stock if r["shelf"] is not None})
        return {"summary": await self.sales_summary(day), "names": names,
                "products": [{"sku_id": sku, "name": name} for name, sku in shelf_products],
                "orders": await self.orders(day, day, limit=500),
                "failed": await self.orders(day, day, where="AND status='failed'", limit=200),
                "refunds_due": [dict(r) for r in refunds], "review_queue": await self.review_queue()}

    def evidence_path(self, session_id: str, name: str) -> Any:
        """Path of one take-and-go evidence image, or None (no service, bad name, not kept)."""
        svc = self.m.extras.get("takeandgo")
        store = getattr(svc, "evidence", None)
        return store.path(session_id, name) if store is not None else None

    async def review_queue(self) -> list[dict[str, Any]] | None:
        svc = self.m.extras.get("takeandgo")
        if svc is None or not hasattr(svc, "review_queue"):
            return None
        return [dict(item) for item in await _maybe_await(svc.review_queue())]

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
        where, args = ("WHERE kind=?", [kind]) if kind else ("", [])
        total = await self.m.db.fetchone(f"SELECT COUNT(*) AS n FROM events {where}", args)
        rows = await self.m.db.fetchall(f"SELECT event_id, seq, at, kind, severity, source, data FROM events {where} "
                                        "ORDER BY event_id DESC LIMIT ? OFFSET ?", [*args, per_page,
                                                                                    (page - 1) * per_page])
        kinds = await self.m.db.fetchall("SELECT DISTINCT kind FROM events ORDER BY kind")
        return {"kind": kind, "page": page, "per_page": per_page, "total": total["n"] if total else 0,
                "kinds": [k["kind"] for k in kinds],
                "events": [{**dict(r), "data": json.loads(r["data"])} for r in rows]}

    async def alarm_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Alarm episodes, newest first, each with a human duration ("3 h 12 min", or "active")."""
        return [{**ep, "duration": "active" if ep["cleared_at"] is None else human_duration(ep["duration_s"])}
                for ep in await reports.alarm_history(self.m.db, limit)]

    async def slot_failures(self, days: int = 30) -> list[dict[str, Any]]:
        """Failed vends per slot and reason over the last `days` days, with the product's name."""
        since = (dt.date.fromisoformat(self.today()) - dt.timedelta(days=days)).isoformat()
        names = {r["slot_id"]: r["name"] for r in await self.stock()}
        return [{**r, "name": names.get(r["slot_id"], "")} for r in await reports.slot_failures(self.m.db, since)]

    async def lockouts(self) -> list[dict[str, Any]]:
        rows = await self.m.db.fetchall("SELECT * FROM lockouts WHERE cleared_at IS NULL ORDER BY lockout_id")
        return [{**dict(r), "data": json.loads(r["data"])} for r in rows]

    def frame_log(self, n: int = 50) -> list[dict[str, Any]]:
        """The vend board's last frames, each decoded (message, seq, fields) next to its bytes."""
        log_ = list(getattr(self.m.board, "frame_log", []))[-n:]
        return [{"at": round(at, 3), "dir": d, "hex": h, **diagnostics.decode_frame(h)} for at, d, h in log_]

    async def device_info(self) -> dict[str, Any]:
        """Board firmware, network (interfaces, cloud link) and payment reader, "unknown" where not known."""
        sync = await self.sync_status()
        svc = self.m.extras.get("sync")
        st = getattr(svc, "status", None) if svc is not None else None
        st = st if isinstance(st, dict) else {}
        return {"board": diagnostics.board_info(self.m.board, self.frame_log(200)),
                "network": {"interfaces": diagnostics.network_state(), "cloud": sync["state"],
                            "last_contact": st.get("last_ack_at") or sync["last_ack"],
                            "last_error": st.get("last_error") or "", "transport": st.get("transport") or ""},
                "payment": diagnostics.payment_state(self.m.extras.get("payment"))}

    def capabilities(self) -> dict[str, bool]:
        return {"door": _has(self.m.extras.get("door"), "unlock"), "tare": _has(self.m.extras.get("shelves"), "tare"),
                "registers": bool(_devices_of("plant", self.m.extras.get("plant"))),
                "food_safety": self._food_safety() is not None, "temperature": self.temperature(60) is not None,
                "takeandgo": "takeandgo" in self.m.extras}

    # ---- actions (each audited) --------------------------------------------------------------

    async def restock(self, actor: str, slot_id: str | None, count: int | None,
                      best_before: str | None = None) -> dict[str, int]:
        """Fill one slot (or all); `best_before` (ISO date, one slot only) is the earliest date of what is
        now in the lane. Without it a lane keeps the date it had."""
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise SaleRefused("bad_input", f"count must be a whole number >= 0 (got {count!r})")
        day = self.check_best_before(best_before) if best_before else None
        if day and slot_id is None:
            raise SaleRefused("bad_input", "a best-before date belongs to one slot")
        result = await self.m.restock(slot_id, count, actor)
        if day and slot_id is not None:
            async with self.m.db.tx() as tx:
                await fresh.set_best_before(tx, slot_id, day)
        await self.audit(actor, "restock", slot_id=slot_id or "*", count=count, slots=len(result),
                         **({"best_before": day} if day else {}))
        return result

    def check_best_before(self, value: Any) -> str:
        """An ISO date from today (local) up to MAX_SHELF_LIFE_DAYS ahead; anything else is refused."""
        try:
            day = dt.date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            day = None
        today = dt.date.fromisoformat(self.today())
        if day is None or not today <= day <= today + dt.timedelta(days=MAX_SHELF_LIFE_DAYS):
            raise SaleRefused("bad_input", f"best-before must be a date (YYYY-MM-DD) from {today} to "
                                           f"{today + dt.timedelta(days=MAX_SHELF_LIFE_DAYS)} (got {value!r})")
        return day.isoformat()

    async def review_decide(self, actor: str, session_id: str, action: str,
                            basket: dict[str, int] | None = None) -> dict[str, Any]:
        """Approve, correct or void a take-and-go basket waiting for review (charged only now; audited)."""
        if "takeandgo" not in self.m.extras:
            raise NotAvailable("take-and-go")
        try:
            return await review.decide(self.m.db, actor, session_id, action, basket)
        finally:
            self.invalidate()

    async def needs_count(self) -> list[dict[str, Any]]:
        """Vends the board could not account for, waiting for a technician's count (issue 12)."""
        names = {r["slot_id"]: r for r in await self.stock()}
        return [{**e, "name": names[e["slot_id"]]["name"] if e["slot_id"] in names else "",
                 "ledger_count": names[e["slot_id"]]["count"] if e["slot_id"] in names else None}
                for e in await self.m.vends_needing_count()]

    async def settle_count(self, actor: str, order_id: str, counted: int) -> dict[str, Any]:
        """The technician counted the slot of a needs_count vend: the count settles it (VendService)."""
        await self.audit(actor, "settle_count", order_id=order_id, counted=counted)
        try:
            return await self.m.settle_count(order_id, counted, actor)
        finally:
            self.invalidate()

    async def test_vend(self, actor: str, slot_id: str) -> dict[str, Any]:
        await self.audit(actor, "test_vend", slot_id=slot_id)  # before: the motor may run even if we crash
        try:
            return await self.m.test_vend(slot_id, actor)
        finally:
            self.invalidate()

    async def unlock_door(self, actor: str, ms: int) -> str:
        door: Any = self.m.extras.get("door")
        if not _has(door, "unlock"):
            raise NotAvailable("door service")
        await self.audit(actor, "unlock_door", ms=ms)
        try:
            await door.unlock(ms, "technician", actor=actor)
        except (DeviceError, TimeoutError) as exc:
            raise SaleRefused("device_error", str(exc)) from exc
        self.invalidate()
        return "unlocked"

    async def tare(self, actor: str, shelf: int | None) -> Any:
        shelves: Any = self.m.extras.get("shelves")
        if not _has(shelves, "tare"):
            raise NotAvailable("weight shelves")
        targets = [shelf] if shelf is not None else sorted(getattr(shelves, "shelves", []))
        if not targets:
            raise SaleRefused("bad_input", "no shelves to tare")
        await self.audit(actor, "tare", shelf=shelf)
        try:
            for k in targets:
                await shelves.tare(k)
        except (DeviceError, TimeoutError, KeyError) as exc:
            raise SaleRefused("device_error", f"tare failed: {exc}") from exc
        self.invalidate()
        return f"tared {targets}"

    async def clear_lockout(self, actor: str) -> Any:
        fs = self._food_safety()
        if fs is None:
            raise NotAvailable("food-safety service")
        cleared = bool(await fs.clear_lockout(actor))
        self.invalidate()
        await self.audit(actor, "clear_food_safety_lockout", cleared=cleared)
        return "cleared" if cleared else "no lockout was active"

    async def read_registers(self, actor: str, device: str) -> dict[str, Any]:
        """One out-of-band read of every point of a Modbus device (`read_now`), for the technician."""
        devs = dict(_devices_of("plant", self.m.extras.get("plant")))
        dev = devs.get(device)
        if dev is None or not callable(getattr(dev, "read_now", None)):
            raise NotAvailable(f"register reads for {device!r}")
        await self.audit(actor, "read_registers", device=device)
        try:
            async with asyncio.timeout(3.0):
                return _plain(await dev.read_now())
        except (DeviceError, TimeoutError) as exc:
            raise SaleRefused("device_error", f"{device}: {type(exc).__name__} {exc}") from exc

    def _food_safety(self) -> Any:
        svc = self.m.extras.get("temperature")
        return svc if _has(svc, "clear_lockout") else None


def expiry(best_before: str | None, today: dt.date, count: int) -> str | None:
    """"expired" (past its date), "near" (within NEAR_EXPIRY_DAYS), "ok", or None (no date or lane empty)."""
    if not best_before or count <= 0:
        return None
    try:
        left = (dt.date.fromisoformat(best_before) - today).days
    except ValueError:
        return None
    return "expired" if left < 0 else "near" if left <= NEAR_EXPIRY_DAYS else "ok"


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


def _plain(values: Any) -> dict[str, Any]:
    """Register values as JSON-safe scalars."""
    out: dict[str, Any] = {}
    for k, v in dict(values or {}).items():
        out[str(k)] = v if isinstance(v, (bool, int, str)) or v is None else _num(v)
    return out


def _has(obj: Any, method: str) -> bool:
    return obj is not None and callable(getattr(obj, method, None))


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 2) if f == f else None  # NaN -> None


def _alarm_limits(cfg: Any) -> dict[str, float | None]:
    """The temperature alarm limits from the service's config (None where a value is not configured)."""
    keys = ("high_alarm_c", "low_alarm_c", "food_safety_limit_c")
    return {k: _num(getattr(cfg, k, None)) for k in keys}


def _sync_online(svc: Any) -> bool:
    """The sync client's link state: `SyncClient.status["online"]` (a property returning a dict)."""
    st = getattr(svc, "status", None) if svc is not None else None
    return bool(st.get("online", False)) if isinstance(st, dict) else False


def _online(dev: Any) -> bool:
    for attr in ("online", "connected"):
        v = getattr(dev, attr, None)
        if v is not None:
            return bool(v() if callable(v) else v)
    return False


def _board_seen_ago(dev: Any) -> float | None:
    log_ = getattr(dev, "frame_log", None)
    rx = [at for at, d, _ in list(log_ or [])[-20:] if d == "rx"]
    return round(time.time() - rx[-1], 1) if rx else None


def _devices_of(name: str, svc: Any) -> list[tuple[str, Any]]:
    """A service may expose `devices` ({name: device}) or be a device itself (has online/connected)."""
    if svc is None:
        return []
    devs = getattr(svc, "devices", None)
    if isinstance(devs, dict):
        return [(f"{name}.{k}", v) for k, v in devs.items()]
    if hasattr(svc, "online") or hasattr(svc, "connected"):
        return [(name, svc)]
    return []


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

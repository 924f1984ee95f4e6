"""Read-only reports for the technician page (SQL stays in the ledger package).

- `alarm_history`: each alarm episode (raised, cleared, how long) from the ledger's alarm events.
- `slot_failures`: failed vends per slot and reason (jams, no drop, …) since a day.
- `orders`, `sales_counts`, `refunds_due`: orders by creation time (with their lines) and a day's totals.
- `events_page`, `open_lockouts`, `outbox_state`: the event log, food-safety lockouts, the sync backlog.
- `audit` (and its parts `audit_*`, `quick_check`): the counts of GET /api/v1/audit, which scripts,
  tests and the out-of-process demo check a run against.

Times are stored UTC ISO strings; callers turn local days into such bounds (`lo <= created_at < hi`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from edge.ledger import journal, payments
from edge.ledger.db import LedgerDB

ALARM_EVENTS_SCANNED = 1000  # newest alarm events read; older episodes drop off the page


def _ts(iso: str) -> float | None:
    try:
        t = dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


async def alarm_history(db: LedgerDB, limit: int = 100) -> list[dict[str, Any]]:
    """Alarm episodes, newest first: {alarm_key, kind, severity, message, raised_at, cleared_at, duration_s}.
    An alarm still active has cleared_at None and duration_s None."""
    rows = await db.fetchall(
        "SELECT event_id, at, kind, severity, data FROM events WHERE kind IN ('alarm_raised', 'alarm_cleared') "
        "ORDER BY event_id DESC LIMIT ?",
        (ALARM_EVENTS_SCANNED,),
    )
    open_: dict[str, dict[str, Any]] = {}
    episodes: list[dict[str, Any]] = []
    for r in reversed(rows):
        data = json.loads(r["data"])
        key = str(data.get("alarm_key", ""))
        if r["kind"] == "alarm_raised":
            ep = {
                "alarm_key": key,
                "kind": data.get("kind", ""),
                "severity": r["severity"],
                "message": data.get("message", ""),
                "raised_at": r["at"],
                "cleared_at": None,
                "duration_s": None,
            }
            open_[key] = ep
            episodes.append(ep)
        elif key in open_:
            ep = open_.pop(key)
            ep["cleared_at"] = r["at"]
            a, b = _ts(ep["raised_at"]), _ts(r["at"])
            ep["duration_s"] = round(b - a, 1) if a is not None and b is not None else None
    return list(reversed(episodes))[:limit]


async def slot_failures(db: LedgerDB, since: str) -> list[dict[str, Any]]:
    """Failed vends per slot and reason since `since` (an ISO timestamp): {slot_id, reason, count, last_at},
    most failures first."""
    rows = await db.fetchall(
        "SELECT l.slot_id AS slot_id, o.reason AS reason, COUNT(*) AS count, MAX(o.created_at) AS last_at "
        "FROM orders o JOIN order_lines l ON l.order_id = o.order_id "
        "WHERE o.status = 'failed' AND o.created_at >= ? GROUP BY l.slot_id, o.reason "
        "ORDER BY count DESC, last_at DESC LIMIT 200",
        (since,),
    )
    return [dict(r) for r in rows]


async def outbox_state(db: LedgerDB) -> dict[str, Any]:
    """{backlog, parked, last_ack}: records still to push, records parked, the last acknowledgement."""
    row = await db.fetchone(
        "SELECT SUM(acked_at IS NULL AND parked_reason IS NULL) AS backlog, "
        "SUM(parked_reason IS NOT NULL) AS parked, MAX(acked_at) AS last_ack FROM outbox"
    )
    return {
        "backlog": int(row["backlog"] or 0) if row else 0,
        "parked": int(row["parked"] or 0) if row else 0,
        "last_ack": row["last_ack"] if row else None,
    }


async def orders(
    db: LedgerDB, lo: str, hi: str, *, failed_only: bool = False, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Orders created in [lo, hi), newest first, each with `refund_due` as a bool and its `lines`."""
    status = "AND status='failed'" if failed_only else ""
    rows = await db.fetchall(
        f"SELECT * FROM orders WHERE created_at >= ? AND created_at < ? {status} ORDER BY seq DESC LIMIT ?",
        (lo, hi, limit),
    )
    lines = await db.fetchall(
        "SELECT l.order_id, l.sku_id, l.slot_id, l.qty, l.unit_price FROM order_lines l JOIN orders o "
        "ON o.order_id = l.order_id WHERE o.created_at >= ? AND o.created_at < ? ORDER BY l.line_no",
        (lo, hi),
    )
    by_order: dict[str, list[dict[str, Any]]] = {}
    for ln in lines:
        by_order.setdefault(ln["order_id"], []).append(dict(ln))
    return [
        {**dict(r), "refund_due": bool(r["refund_due"]), "lines": by_order.get(r["order_id"], [])}
        for r in rows
    ]


async def sales_counts(db: LedgerDB, lo: str, hi: str) -> dict[str, int]:
    """{orders, sold, revenue, failed} for orders created in [lo, hi) (test vends are not sold), and
    `refunds_due` over all time."""
    row = await db.fetchone(
        "SELECT COUNT(*) AS n, SUM(status='completed' AND kind!='test_vend') AS sold, "
        "SUM(CASE WHEN status='completed' THEN total_amount ELSE 0 END) AS revenue, "
        "SUM(status='failed') AS failed FROM orders WHERE created_at >= ? AND created_at < ?",
        (lo, hi),
    )
    due = await db.fetchone("SELECT COUNT(*) AS n FROM orders WHERE refund_due=1")
    assert row is not None  # an aggregate always answers one row
    return {
        "orders": row["n"] or 0,
        "sold": row["sold"] or 0,
        "revenue": row["revenue"] or 0,
        "failed": row["failed"] or 0,
        "refunds_due": due["n"] if due else 0,
    }


async def refunds_due(db: LedgerDB, limit: int = 200) -> list[dict[str, Any]]:
    """Orders owing the customer a refund, newest first."""
    rows = await db.fetchall("SELECT * FROM orders WHERE refund_due=1 ORDER BY seq DESC LIMIT ?", (limit,))
    return [dict(r) for r in rows]


async def events_page(db: LedgerDB, kind: str, limit: int, offset: int) -> dict[str, Any]:
    """{total, kinds, events}: one page of the event log (newest first, `data` decoded), optionally of
    one kind; `kinds` lists every kind in the log."""
    where, args = ("WHERE kind=?", [kind]) if kind else ("", [])
    total = await db.fetchone(f"SELECT COUNT(*) AS n FROM events {where}", args)
    rows = await db.fetchall(
        f"SELECT event_id, seq, at, kind, severity, source, data FROM events {where} "
        "ORDER BY event_id DESC LIMIT ? OFFSET ?",
        [*args, limit, offset],
    )
    kinds = await db.fetchall("SELECT DISTINCT kind FROM events ORDER BY kind")
    return {
        "total": total["n"] if total else 0,
        "kinds": [k["kind"] for k in kinds],
        "events": [{**dict(r), "data": json.loads(r["data"])} for r in rows],
    }


async def open_lockouts(db: LedgerDB) -> list[dict[str, Any]]:
    """Food-safety lockouts not cleared yet, oldest first (`data` decoded)."""
    rows = await db.fetchall("SELECT * FROM lockouts WHERE cleared_at IS NULL ORDER BY lockout_id")
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


# ---- the audit read model (GET /api/v1/audit): what scripts, tests and the demo check a run against ----

SALE_KINDS = ("vend", "test_vend")  # orders of the spiral slots (take-and-go baskets are not counted here)
_SALE_KINDS_SQL = "('vend','test_vend')"


async def _count(db: LedgerDB, sql: str, params: tuple[Any, ...] = ()) -> int:
    row = await db.fetchone(sql, params)
    return int(row[0] or 0) if row else 0


async def audit_orders(db: LedgerDB) -> dict[str, Any]:
    """Vend and test-vend orders: {by_status: {status: n}, completed_by_slot: {slot: items}, refunds_due: n}."""
    by_status = await db.fetchall(
        f"SELECT status, COUNT(*) AS n FROM orders WHERE kind IN {_SALE_KINDS_SQL} GROUP BY status ORDER BY status")
    by_slot = await db.fetchall(
        "SELECT l.slot_id AS slot_id, SUM(l.qty) AS n FROM orders o JOIN order_lines l ON l.order_id = o.order_id "
        f"WHERE o.kind IN {_SALE_KINDS_SQL} AND o.status = 'completed' GROUP BY l.slot_id ORDER BY l.slot_id")
    return {"by_status": {r["status"]: r["n"] for r in by_status},
            "completed_by_slot": {r["slot_id"]: int(r["n"] or 0) for r in by_slot},
            "refunds_due": await _count(db, f"SELECT COUNT(*) FROM orders WHERE kind IN {_SALE_KINDS_SQL} "
                                            "AND refund_due = 1")}


async def audit_vends(db: LedgerDB) -> dict[str, Any]:
    """The vend journal: entries not settled yet, those waiting for a count, those a count settled (and how
    many of those found the item had fallen: outcome ok)."""
    waiting = await db.fetchall("SELECT order_id, slot_id FROM vend_journal WHERE state = 'needs_count' "
                                "ORDER BY journal_id")
    marks = ",".join("?" * len(journal.OPEN_STATES))
    return {"unreconciled": await _count(db, f"SELECT COUNT(*) FROM vend_journal WHERE state IN ({marks})",
                                         journal.OPEN_STATES),
            "needs_count": [{"order_id": r["order_id"], "slot_id": r["slot_id"]} for r in waiting],
            "counted": await _count(db, "SELECT COUNT(*) FROM vend_journal WHERE settled_by IS NOT NULL"),
            "counted_fell": await _count(db, "SELECT COUNT(*) FROM vend_journal WHERE settled_by IS NOT NULL "
                                             "AND outcome = 'ok'")}


async def audit_alarms(db: LedgerDB) -> dict[str, Any]:
    """{raised, cleared} events, every alarm kind ever stored, the keys of the active ones."""
    kinds = await db.fetchall("SELECT DISTINCT kind FROM alarms ORDER BY kind")
    active = await db.fetchall("SELECT alarm_key FROM alarms WHERE active = 1 ORDER BY alarm_key")
    return {"raised": await _count(db, "SELECT COUNT(*) FROM events WHERE kind = 'alarm_raised'"),
            "cleared": await _count(db, "SELECT COUNT(*) FROM events WHERE kind = 'alarm_cleared'"),
            "kinds": [r["kind"] for r in kinds], "active": [r["alarm_key"] for r in active]}


async def audit_counts(db: LedgerDB) -> dict[str, Any]:
    """Food-safety lockouts (all, still open), events per kind, telemetry minutes stored."""
    kinds = await db.fetchall("SELECT kind, COUNT(*) AS n FROM events GROUP BY kind ORDER BY kind")
    return {"lockouts": {"food_safety": await _count(db, "SELECT COUNT(*) FROM lockouts WHERE kind = 'food_safety'"),
                         "food_safety_open": await _count(db, "SELECT COUNT(*) FROM lockouts WHERE kind = "
                                                              "'food_safety' AND cleared_at IS NULL")},
            "events": {r["kind"]: r["n"] for r in kinds},
            "telemetry_minutes": await _count(db, "SELECT COUNT(DISTINCT minute) FROM telemetry_1min")}


async def audit_payments(db: LedgerDB) -> dict[str, dict[str, int]]:
    """Per payment method: captured/refunded (count and amount), denied, cancelled, voided, still open, and
    the number of disagreements between payments and orders (`payments.disagreements`, should be 0)."""
    out: dict[str, dict[str, int]] = {}
    for r in await db.fetchall("SELECT DISTINCT method FROM payment_sessions ORDER BY method"):
        method = r["method"]
        totals = await payments.payment_totals(db, method)
        broken = await payments.disagreements(db, method)
        out[method] = {**{k: totals.get(k, 0) for k in ("captured", "captured_amount", "refunded",
                                                       "refunded_amount", "denied", "cancelled", "voided")},
                       "open": sum(totals.get(s, 0) for s in payments.OPEN_STATES),
                       "disagreements": sum(map(len, broken.values()))}
    return out


async def quick_check(db: LedgerDB) -> bool:
    """PRAGMA quick_check: the file's structure is sound (cheaper than integrity_check: no index contents)."""
    row = await db.fetchone("PRAGMA quick_check")
    return row is not None and row[0] == "ok"


async def audit(db: LedgerDB) -> dict[str, Any]:
    """The whole audit document of GET /api/v1/audit (docs/web-api.md)."""
    stock = await db.fetchall("SELECT slot_id, count FROM stock ORDER BY slot_id")
    counts = await audit_counts(db)
    return {"orders": await audit_orders(db), "vends": await audit_vends(db),
            "stock": {r["slot_id"]: r["count"] for r in stock}, "alarms": await audit_alarms(db),
            "lockouts": counts["lockouts"], "events": counts["events"],
            "telemetry_minutes": counts["telemetry_minutes"], "payments": await audit_payments(db),
            "integrity_ok": await quick_check(db)}

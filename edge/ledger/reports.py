"""Read-only reports for the technician page (SQL stays in the ledger package).

- `alarm_history`: each alarm episode (raised, cleared, how long) from the ledger's alarm events.
- `slot_failures`: failed vends per slot and reason (jams, no drop, …) since a day.
- `orders`, `sales_counts`, `refunds_due`: orders by creation time (with their lines) and a day's totals.
- `events_page`, `open_lockouts`, `outbox_state`: the event log, food-safety lockouts, the sync backlog.

Times are stored UTC ISO strings; callers turn local days into such bounds (`lo <= created_at < hi`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

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

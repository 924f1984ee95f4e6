"""Read-only reports for the technician page (SQL stays in the ledger package).

- `alarm_history`: each alarm episode (raised, cleared, how long) from the ledger's alarm events.
- `slot_failures`: failed vends per slot and reason (jams, no drop, …) since a day.
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
        "ORDER BY event_id DESC LIMIT ?", (ALARM_EVENTS_SCANNED,))
    open_: dict[str, dict[str, Any]] = {}
    episodes: list[dict[str, Any]] = []
    for r in reversed(rows):
        data = json.loads(r["data"])
        key = str(data.get("alarm_key", ""))
        if r["kind"] == "alarm_raised":
            ep = {"alarm_key": key, "kind": data.get("kind", ""), "severity": r["severity"],
                  "message": data.get("message", ""), "raised_at": r["at"], "cleared_at": None, "duration_s": None}
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
        "ORDER BY count DESC, last_at DESC LIMIT 200", (since,))
    return [dict(r) for r in rows]

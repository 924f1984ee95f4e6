"""Cold-chain rows: the food-safety lockout, the excursion clock kept across restarts, the 1-minute
telemetry of a fridge controller, and the restock events that start a grace period.

The SQL of `edge.services.temperature`; the service keeps the rules, this module the rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edge.ledger.db import LedgerDB, Tx


async def food_safety_locked(db: LedgerDB) -> bool:
    """True while a food-safety lockout has not been cleared."""
    row = await db.fetchone(
        "SELECT lockout_id FROM lockouts WHERE kind='food_safety' "
        "AND cleared_at IS NULL ORDER BY lockout_id DESC LIMIT 1"
    )
    return row is not None


async def record_food_safety_lockout(tx: Tx, reason: str, data: Mapping[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO lockouts(kind, started_at, reason, data) VALUES ('food_safety', ?, ?, ?)",
        (tx.now, reason, json.dumps(dict(data))),
    )


async def clear_food_safety_lockout(tx: Tx, actor: str) -> None:
    await tx.execute(
        "UPDATE lockouts SET cleared_at=?, cleared_by=? WHERE kind='food_safety' AND cleared_at IS NULL",
        (tx.now, actor),
    )


async def load_state(db: LedgerDB, key: str) -> dict[str, Any]:
    """A small JSON document kept in `meta` (the excursion clock); {} when never saved."""
    row = await db.fetchone("SELECT value FROM meta WHERE key=?", (key,))
    return dict(json.loads(row["value"])) if row else {}


async def save_state(tx: Tx, key: str, doc: Mapping[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (key, json.dumps(dict(doc))),
    )


async def write_minute(tx: Tx, minute_iso: str, point: str, avg: float, lo: float, hi: float) -> None:
    """One point's 1-minute aggregate (rewritten if the minute is written again)."""
    await tx.execute(
        "INSERT OR REPLACE INTO telemetry_1min(minute, point, avg, min, max) VALUES (?,?,?,?,?)",
        (minute_iso, point, avg, lo, hi),
    )


async def last_restock_event(db: LedgerDB) -> int:
    """The newest `restock` event id (0 when there is none)."""
    row = await db.fetchone("SELECT MAX(event_id) AS m FROM events WHERE kind='restock'")
    return int(row["m"]) if row and row["m"] is not None else 0


async def restock_events_after(db: LedgerDB, event_id: int) -> list[int]:
    """Ids of `restock` events newer than `event_id`, oldest first."""
    rows = await db.fetchall(
        "SELECT event_id FROM events WHERE kind='restock' AND event_id > ? ORDER BY event_id", (event_id,)
    )
    return [int(r["event_id"]) for r in rows]

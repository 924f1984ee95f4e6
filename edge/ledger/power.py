"""Rows of `edge.services.power`: voltage/humidity telemetry and the open outage's start (meta)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from edge.ledger.db import LedgerDB, Tx

OUTAGE_KEY = "mains_failed_at"


async def write_telemetry(
    tx: Tx, minute_iso: str, device: str, points: Mapping[str, Mapping[str, float]]
) -> None:
    """One period's aggregates per point ('<device>.<point>' in telemetry_1min, keyed by its first minute)."""
    for point, agg in points.items():
        await tx.execute(
            "INSERT OR REPLACE INTO telemetry_1min(minute, point, avg, min, max) VALUES (?,?,?,?,?)",
            (minute_iso, f"{device}.{point}", agg["avg"], agg["min"], agg["max"]),
        )


async def outage_started(db: LedgerDB) -> float | None:
    """Wall time (epoch s) of a mains failure not yet followed by its return, or None."""
    row = await db.fetchone("SELECT value FROM meta WHERE key=?", (OUTAGE_KEY,))
    return None if row is None else float(json.loads(row["value"]))


async def set_outage_started(tx: Tx, wall: float | None) -> None:
    """Remember (or, with None, forget) the start of the open outage."""
    if wall is None:
        await tx.execute("DELETE FROM meta WHERE key=?", (OUTAGE_KEY,))
        return
    await tx.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (OUTAGE_KEY, json.dumps(round(wall, 3))),
    )

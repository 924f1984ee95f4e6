"""Rows of `edge.services.maintenance`: the learnt trend state of the predictive-maintenance watchers
(per spiral, per cooling device), kept in `meta` as JSON so a restart does not relearn baselines."""

from __future__ import annotations

import json
from typing import Any

from edge.ledger.db import LedgerDB, Tx

PREFIX = "maintenance:"


async def load_trend_states(db: LedgerDB, kind: str) -> dict[str, dict[str, Any]]:
    """Every stored state of ``kind`` ('slot' or 'cooling'): name -> the watcher's ``state()``.
    A row that is not a JSON object is skipped (the watcher then learns afresh)."""
    rows = await db.fetchall("SELECT key, value FROM meta WHERE key LIKE ?", (f"{PREFIX}{kind}:%",))
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            value = json.loads(row["value"])
        except ValueError:
            continue
        if isinstance(value, dict):
            out[row["key"][len(PREFIX) + len(kind) + 1:]] = value
    return out


async def save_trend_state(tx: Tx, kind: str, name: str, state: dict[str, Any]) -> None:
    """Store (replace) one watcher's ``state()``."""
    await tx.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (f"{PREFIX}{kind}:{name}", json.dumps(state, separators=(",", ":"))),
    )

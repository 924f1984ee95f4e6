"""Where the price rules live in the ledger: the cloud's validated `pricing` document (meta row),
the lanes' best-before dates (stock.best_before, written at restock), and the trusted high-water
time (the newest event: a wall clock that jumps back below it does not revive ended promotions)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edge.ledger.db import LedgerDB, Tx

META_KEY = "pricing_rules"


async def store(tx: Tx, doc: Mapping[str, Any] | None) -> None:
    """Keep the (already validated) pricing document; None removes every rule."""
    if doc is None:
        await tx.execute("DELETE FROM meta WHERE key=?", (META_KEY,))
    else:
        await tx.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (META_KEY, json.dumps(doc, separators=(",", ":"))),
        )
    tx.invalidate(META_KEY)


async def load(db: LedgerDB) -> Mapping[str, Any] | None:
    row = await db.fetchone("SELECT value FROM meta WHERE key=?", (META_KEY,))
    return None if row is None else json.loads(row["value"])


async def best_before(tx: Tx | LedgerDB, slot_id: str) -> str | None:
    """The lane's best-before date (ISO day) or None."""
    row = await tx.fetchone("SELECT best_before FROM stock WHERE slot_id=?", (slot_id,))
    return None if row is None else row["best_before"]


async def high_water(tx: Tx | LedgerDB) -> str | None:
    """The newest event's time (ISO UTC), the latest wall time this ledger has trusted."""
    row = await tx.fetchone("SELECT at FROM events ORDER BY event_id DESC LIMIT 1")
    return None if row is None else str(row["at"])

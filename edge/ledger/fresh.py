"""Best-before dates per lane for fresh food (column ``stock.best_before``, an ISO date or NULL).

The technician enters the earliest best-before of what is in a lane when restocking it; the page
highlights lanes near or past that date. A lane without a date is not tracked.
"""

from __future__ import annotations

from edge.ledger.db import LedgerDB, Tx


async def set_best_before(tx: Tx, slot_id: str, day: str | None) -> None:
    """Record (or clear, with None) a lane's best-before date; an event says who changed what."""
    row = await tx.fetchone("SELECT best_before FROM stock WHERE slot_id=?", (slot_id,))
    if row is None:
        raise KeyError(slot_id)
    await tx.execute("UPDATE stock SET best_before=?, updated_at=? WHERE slot_id=?", (day, tx.now, slot_id))
    await tx.event("best_before_set", {"slot_id": slot_id, "best_before": day, "was": row["best_before"]})


async def best_before(db: LedgerDB) -> dict[str, str]:
    """{slot_id: ISO date} for every lane with a date."""
    rows = await db.fetchall("SELECT slot_id, best_before FROM stock WHERE best_before IS NOT NULL")
    return {r["slot_id"]: r["best_before"] for r in rows}

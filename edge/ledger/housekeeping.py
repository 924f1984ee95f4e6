"""Ledger housekeeping statements for the retention pass (edge/services/retention.py keeps the policy).

Each prune runs in its own short transaction so sales never wait long behind it.
"""

from __future__ import annotations

import os

from edge.ledger.db import LedgerDB


async def prune_events(db: LedgerDB, keep: int) -> int:
    """Delete all but the newest `keep` events; returns how many went."""
    async with db.tx() as tx:
        row = await tx.fetchone("SELECT MAX(event_id) AS top FROM events")
        if row is None or row["top"] is None:
            return 0
        cur = await tx.execute("DELETE FROM events WHERE event_id <= ?", (int(row["top"]) - keep,))
        return int(cur.rowcount)


async def prune_telemetry(db: LedgerDB, cutoff_iso: str) -> int:
    """Delete 1-minute telemetry older than the cut-off; returns how many rows went."""
    async with db.tx() as tx:
        cur = await tx.execute("DELETE FROM telemetry_1min WHERE minute < ?", (cutoff_iso,))
        return int(cur.rowcount)


async def measure(db: LedgerDB) -> tuple[int, int, int]:
    """(bytes in use incl. WAL, main file bytes, WAL bytes)."""
    pages = await db.fetchone("PRAGMA page_count")
    free = await db.fetchone("PRAGMA freelist_count")
    size = await db.fetchone("PRAGMA page_size")
    assert pages is not None and free is not None and size is not None
    wal = _file_size(db.path + "-wal")
    return (int(pages[0]) - int(free[0])) * int(size[0]) + wal, _file_size(db.path), wal


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0

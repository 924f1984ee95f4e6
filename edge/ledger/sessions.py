"""Take-and-go session rows: one per authorized session, its state machine's state and its data.

The SQL of `edge.services.takeandgo`; the service runs the session, this module keeps its row.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from edge.ledger.db import LedgerDB, Tx

FINAL_STATES = ("charged", "needs_review", "void")


async def exists(db: LedgerDB, session_id: str) -> bool:
    return await db.fetchone("SELECT 1 FROM sessions WHERE session_id=?", (session_id,)) is not None


async def save(
    tx: Tx,
    session_id: str,
    state: str,
    customer_ref: str,
    limit_amount: int | None,
    currency: str,
    offline: bool,
    data_json: str,
) -> None:
    """Insert the session or update its state and data (created_at is kept)."""
    await tx.execute(
        "INSERT INTO sessions(session_id, state, customer_ref, limit_amount, currency, offline, data,"
        " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(session_id) DO UPDATE SET"
        " state=excluded.state, data=excluded.data, updated_at=excluded.updated_at",
        (session_id, state, customer_ref, limit_amount, currency, int(offline), data_json, tx.now, tx.now),
    )


async def latest_unfinished(db: LedgerDB) -> sqlite3.Row | None:
    """The newest session not in a final state (a restart resumes it), or None."""
    return await db.fetchone(
        "SELECT * FROM sessions WHERE state NOT IN (?,?,?) ORDER BY created_at DESC LIMIT 1", FINAL_STATES
    )


async def needing_review(db: LedgerDB, limit: int) -> list[dict[str, Any]]:
    """Sessions a human must decide, newest first: session_id, customer_ref, data (JSON), updated_at."""
    rows = await db.fetchall(
        "SELECT session_id, customer_ref, data, updated_at FROM sessions "
        "WHERE state='needs_review' ORDER BY updated_at DESC LIMIT ?",
        (limit,),
    )
    return [dict(r) for r in rows]

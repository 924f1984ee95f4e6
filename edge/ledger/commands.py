"""Cloud command rows: each command id is claimed before it runs and keeps its result (at most once).

The SQL of `edge.services.cloud.CommandInbox`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edge.ledger.db import LedgerDB, Tx


async def stored(db: LedgerDB, command_id: str) -> tuple[str, dict[str, Any]] | None:
    """(status, result) of a command seen before — status "started" if it was interrupted — or None."""
    row = await db.fetchone("SELECT status, result FROM commands WHERE command_id=?", (command_id,))
    return None if row is None else (str(row["status"]), dict(json.loads(row["result"])))


async def claim(tx: Tx, command_id: str, name: str) -> None:
    """Record the command as started, before it runs."""
    await tx.execute(
        "INSERT INTO commands(command_id, name, received_at, status, result) VALUES (?,?,?,?,?)",
        (command_id, name, tx.now, "started", "{}"),
    )


async def finish(tx: Tx, command_id: str, status: str, detail: Mapping[str, Any]) -> None:
    await tx.execute(
        "UPDATE commands SET status=?, result=? WHERE command_id=?",
        (status, json.dumps(dict(detail), default=str), command_id),
    )

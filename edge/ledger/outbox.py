"""The outbox as the sync client sees it (OutboxPort), plus compaction and the command inbox store."""

from __future__ import annotations

import json

import structlog

from edge.core.wire import OutboxRecord
from edge.crashpoints import crash_point
from edge.ledger.db import LedgerDB
from edge.ledger.repo import raise_alarm

log = structlog.get_logger(__name__)


class LedgerOutbox:
    """OutboxPort over the ledger. Records stay until acked; rejected ones are parked, not retried."""

    def __init__(self, db: LedgerDB) -> None:
        self.db = db

    async def fetch_batch(self, limit: int, max_bytes: int) -> list[OutboxRecord]:
        rows = await self.db.fetchall(
            "SELECT record_id, seq, kind, priority, created_at, payload FROM outbox "
            "WHERE acked_at IS NULL AND parked_reason IS NULL ORDER BY priority, seq LIMIT ?", (limit,))
        batch: list[OutboxRecord] = []
        size = 0
        for r in rows:
            size += len(r["payload"]) + 120
            if batch and size > max_bytes:
                break
            batch.append(OutboxRecord(r["record_id"], r["seq"], r["kind"], r["created_at"],
                                      json.loads(r["payload"]), r["priority"]))
        return batch

    async def ack(self, record_ids: list[str]) -> None:
        if not record_ids:
            return
        async with self.db.tx() as tx:
            for i in range(0, len(record_ids), 500):
                chunk = record_ids[i:i + 500]
                await tx.execute(f"UPDATE outbox SET acked_at=? WHERE record_id IN ({','.join('?' * len(chunk))})"
                                 " AND acked_at IS NULL", (tx.now, *chunk))
                crash_point("sync.mid_ack")

    async def park(self, record_id: str, reason: str) -> None:
        async with self.db.tx() as tx:
            await tx.execute("UPDATE outbox SET parked_reason=? WHERE record_id=?", (reason[:500], record_id))
            await raise_alarm(tx, "outbox_parked", "outbox_parked",
                              "the cloud rejected a record; it is parked for review",
                              data={"record_id": record_id, "reason": reason[:200]})
        log.warning("outbox_record_parked", record_id=record_id, reason=reason)

    async def backlog(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE acked_at IS NULL AND parked_reason IS NULL")
        return int(row["n"]) if row else 0

    async def parked(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE parked_reason IS NOT NULL")
        return int(row["n"]) if row else 0

    async def compact(self, older_than_iso: str) -> int:
        """Delete acked records acked before the cut-off; returns how many went."""
        async with self.db.tx() as tx:
            cur = await tx.execute("DELETE FROM outbox WHERE acked_at IS NOT NULL AND acked_at < ?",
                                   (older_than_iso,))
            n = cur.rowcount
        return n

"""The vend journal: one row per VEND, written before each step of it happens (see docs/ledger.md).

States: ``sent`` (written with the order, with the board boot id the VEND is addressed to; its commit
is the last step before the frame is written) → ``acked`` (the board ACKed, with the
boot id of the ACK) → ``done`` with an outcome; or ``unknown`` (the daemon lost sight of it) →
settled by reconciliation; or ``needs_count`` (nobody can tell whether the item fell) → settled by a
technician's count (``counted``, ``settled_by``). ``requested`` (nothing sent) is only found in
ledgers written before protocol v2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.ledger.db import LedgerDB, Tx

OPEN_STATES = ("requested", "sent", "acked", "unknown")  # sales stop while any of these exists
_OPEN_SQL = "('requested','sent','acked','unknown')"


@dataclass(frozen=True)
class Entry:
    journal_id: int
    order_id: str
    slot_id: str
    seq: int
    state: str
    outcome: str | None
    sent_boot: int | None
    acked_boot: int | None
    board_slot: str | None
    sent_memory: int | None


def _entry(row: Any) -> Entry:
    return Entry(row["journal_id"], row["order_id"], row["slot_id"], row["board_seq"], row["state"],
                 row["outcome"], row["sent_boot"], row["acked_boot"], row["board_slot"], row["sent_memory"])


_COLS = "journal_id, order_id, slot_id, board_seq, state, outcome, sent_boot, acked_boot, board_slot, sent_memory"


async def _entries(db: Tx | LedgerDB, sql: str, params: tuple[str | int, ...] = ()) -> list[Entry]:
    """Rows inside a transaction (its own view) or committed ones (outside)."""
    rows = await (db.db.execute_fetchall(sql, params) if isinstance(db, Tx) else db.fetchall(sql, params))
    return [_entry(r) for r in rows]


async def insert(tx: Tx, order_id: str, slot_id: str, seq: int, boot: int, memory: int) -> None:
    """A new entry, ``sent`` to board boot ``boot`` (which keeps ``memory`` outcomes across a reset):
    its commit is the last step before the frame leaves."""
    await tx.execute("INSERT INTO vend_journal(order_id, slot_id, board_seq, state, sent_boot, sent_memory, "
                     "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                     (order_id, slot_id, seq, "sent", boot, memory, tx.now, tx.now))


async def get(tx: Tx | LedgerDB, seq: int) -> Entry | None:
    row = await tx.fetchone(f"SELECT {_COLS} FROM vend_journal WHERE board_seq=?", (seq,))
    return None if row is None else _entry(row)


async def by_order(tx: Tx | LedgerDB, order_id: str) -> Entry | None:
    row = await tx.fetchone(f"SELECT {_COLS} FROM vend_journal WHERE order_id=?", (order_id,))
    return None if row is None else _entry(row)


async def mark_acked(tx: Tx, seq: int, boot: int) -> None:
    await tx.execute("UPDATE vend_journal SET state='acked', acked_boot=?, updated_at=? WHERE board_seq=?",
                     (boot, tx.now, seq))


async def mark_unknown(tx: Tx, seq: int) -> None:
    await tx.execute("UPDATE vend_journal SET state='unknown', updated_at=? WHERE board_seq=?", (tx.now, seq))


async def mark_done(tx: Tx, seq: int, outcome: str, board_slot: str | None = None) -> None:
    await tx.execute("UPDATE vend_journal SET state='done', outcome=?, board_slot=?, updated_at=? WHERE board_seq=?",
                     (outcome, board_slot, tx.now, seq))


async def mark_needs_count(tx: Tx, seq: int) -> None:
    await tx.execute("UPDATE vend_journal SET state='needs_count', updated_at=? WHERE board_seq=?", (tx.now, seq))


async def mark_counted(tx: Tx, seq: int, outcome: str, counted: int, actor: str) -> None:
    await tx.execute("UPDATE vend_journal SET state='done', outcome=?, counted=?, settled_by=?, updated_at=? "
                     "WHERE board_seq=?", (outcome, counted, actor, tx.now, seq))


async def open_entries(db: Tx | LedgerDB) -> list[Entry]:
    """Entries whose outcome the daemon has not settled, oldest first."""
    return await _entries(db, f"SELECT {_COLS} FROM vend_journal WHERE state IN {_OPEN_SQL} ORDER BY journal_id")


async def acked_before(db: Tx | LedgerDB, seq: int) -> Entry | None:
    """The newest VEND below `seq` that a board ACKed: the anchor that shows a board's memory survived."""
    rows = await _entries(db, f"SELECT {_COLS} FROM vend_journal WHERE board_seq < ? AND acked_boot IS NOT NULL "
                              "ORDER BY board_seq DESC LIMIT 1", (seq,))
    return rows[0] if rows else None


async def count_open(db: LedgerDB) -> int:
    return len(await open_entries(db))


async def needs_count(db: Tx | LedgerDB, slot_id: str | None = None) -> list[Entry]:
    """Entries waiting for a technician's count (on ``slot_id``, the asked or the reported slot)."""
    where, params = "state='needs_count'", tuple[str, ...]()
    if slot_id is not None:
        where, params = where + " AND (slot_id=? OR board_slot=?)", (slot_id, slot_id)
    return await _entries(db, f"SELECT {_COLS} FROM vend_journal WHERE {where} ORDER BY journal_id", params)


async def blocking_restock(tx: Tx, slot_id: str | None) -> str | None:
    """The slot of an open or needs_count vend (on ``slot_id``, or anywhere when None), else None.

    A restock then would overwrite the count that settles it."""
    sql = (f"SELECT slot_id FROM vend_journal WHERE (state IN {_OPEN_SQL} OR state='needs_count')"
           + (" AND (slot_id=? OR board_slot=?)" if slot_id else "") + " LIMIT 1")
    row = await tx.fetchone(sql, (slot_id, slot_id) if slot_id else ())
    return None if row is None else str(row["slot_id"])


async def bump_jam(tx: Tx, slot_id: str) -> None:
    await tx.execute("UPDATE stock SET jam_count=jam_count+1 WHERE slot_id=?", (slot_id,))


async def reset_jam(tx: Tx, slot_id: str) -> None:
    await tx.execute("UPDATE stock SET jam_count=0 WHERE slot_id=?", (slot_id,))


async def order_total(tx: Tx, order_id: str) -> int:
    row = await tx.fetchone("SELECT total_amount FROM orders WHERE order_id=?", (order_id,))
    return int(row[0]) if row else 0

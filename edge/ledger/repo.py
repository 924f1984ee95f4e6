"""Repositories over the ledger: planogram, stock, orders, the vend journal, alarms, commands.

Write helpers take an open `Tx`, so one sale step is one transaction; reads go through `LedgerDB`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge.core.catalog import Planogram
from edge.core.errors import SaleRefused
from edge.ledger.db import LedgerDB, Tx


@dataclass(frozen=True)
class StockRow:
    slot_id: str
    sku_id: str
    count: int
    capacity: int
    disabled: bool
    disabled_reason: str | None
    jam_count: int
    mixed: bool = True  # may hold items not its own (take-and-go lanes): until a technician restocks it


async def current_planogram(db: LedgerDB) -> Planogram | None:
    """The newest planogram, parsed once and cached until the next apply."""
    cached = db.cache.get("planogram")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    row = await db.fetchone("SELECT doc FROM planograms ORDER BY version DESC LIMIT 1")
    planogram = Planogram.from_doc(json.loads(row["doc"])) if row else None
    if planogram is not None:
        db.cache["planogram"] = planogram
    return planogram


async def apply_planogram(tx: Tx, planogram: Planogram, source: str) -> None:
    """Store a validated planogram and align the stock table: new slots start empty, a slot whose
    SKU changed keeps its count (a technician restocks it), removed slots are dropped."""
    await tx.execute("INSERT OR REPLACE INTO planograms(version, doc, applied_at, source) VALUES (?,?,?,?)",
                     (planogram.version, json.dumps(planogram.to_doc()), tx.now, source))
    tx.invalidate("planogram")
    for slot in planogram.slots.values():
        await tx.execute(
            "INSERT INTO stock(slot_id, sku_id, count, capacity, updated_at) VALUES (?,?,0,?,?) "
            "ON CONFLICT(slot_id) DO UPDATE SET sku_id=excluded.sku_id, capacity=excluded.capacity, "
            "count=MIN(stock.count, excluded.capacity), updated_at=excluded.updated_at, "
            "mixed=CASE WHEN stock.sku_id=excluded.sku_id THEN stock.mixed ELSE 1 END",
            (slot.slot_id, slot.sku_id, slot.capacity, tx.now))
    keep = list(planogram.slots)
    marks = ",".join("?" * len(keep))
    await tx.execute(f"DELETE FROM stock WHERE slot_id NOT IN ({marks})", keep)
    await tx.event("planogram_applied", {"version": planogram.version, "source": source})


def _stock(row: Any) -> StockRow:
    return StockRow(row["slot_id"], row["sku_id"], row["count"], row["capacity"], bool(row["disabled"]),
                    row["disabled_reason"], row["jam_count"], bool(row["mixed"]))


async def pure_lanes(db: LedgerDB) -> set[str]:
    """Slots known to hold only their own product: restocked since anything could have been put in."""
    return {r["slot_id"] for r in await db.fetchall("SELECT slot_id FROM stock WHERE mixed=0")}


async def set_mixed(tx: Tx, slot_ids: Iterable[str], mixed: bool) -> None:
    """Mark slots as possibly holding items not their own (a take-and-go session put something in,
    the planogram changed their product), or as pure again (a technician restocked them)."""
    for slot_id in sorted(set(slot_ids)):
        await tx.execute("UPDATE stock SET mixed=? WHERE slot_id=?", (int(mixed), slot_id))


async def stock(db: LedgerDB) -> dict[str, StockRow]:
    return {r["slot_id"]: _stock(r) for r in await db.fetchall("SELECT * FROM stock ORDER BY slot_id")}


async def stock_rows(tx: Tx, slot_id: str | None = None) -> list[StockRow]:
    """One slot's row, or every slot's (slot_id None), read inside the transaction."""
    rows = await tx.db.execute_fetchall("SELECT * FROM stock" + (" WHERE slot_id=?" if slot_id else "")
                                        + " ORDER BY slot_id", (slot_id,) if slot_id else ())
    return [_stock(r) for r in rows]


async def stock_row(tx: Tx | LedgerDB, slot_id: str) -> StockRow | None:
    row = await tx.fetchone("SELECT * FROM stock WHERE slot_id=?", (slot_id,))
    return _stock(row) if row else None


async def change_stock(tx: Tx, slot_id: str, delta: int, reason: str, **extra: Any) -> int:
    """Move a slot's count by delta (never below 0 or above capacity) and tell the cloud."""
    row = await stock_row(tx, slot_id)
    if row is None:
        raise KeyError(slot_id)
    new = max(0, min(row.capacity, row.count + delta))
    await tx.execute("UPDATE stock SET count=?, updated_at=? WHERE slot_id=?", (new, tx.now, slot_id))
    await tx.outbox("stock", {"levels": {slot_id: new}, "slot_id": slot_id, "sku_id": row.sku_id,
                              "delta": new - row.count,
                              "count": new, "reason": reason, **extra})
    return new


async def set_slot_disabled(tx: Tx, slot_id: str, disabled: bool, reason: str | None) -> None:
    await tx.execute("UPDATE stock SET disabled=?, disabled_reason=?, jam_count=CASE WHEN ? THEN jam_count "
                     "ELSE 0 END, updated_at=? WHERE slot_id=?",
                     (int(disabled), reason, int(disabled), tx.now, slot_id))


async def insert_order(tx: Tx, order_id: str, *, kind: str, status: str, total: int, currency: str,
                       payment_ref: str = "", session_id: str | None = None, offline: bool = False,
                       lines: list[Mapping[str, Any]] = ()) -> None:  # type: ignore[assignment]
    await tx.execute(
        "INSERT INTO orders(order_id, kind, status, total_amount, currency, payment_ref, session_id, offline,"
        " created_at, updated_at, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (order_id, kind, status, total, currency, payment_ref, session_id, int(offline), tx.now, tx.now,
         tx.next_seq()))
    for i, line in enumerate(lines):
        await tx.execute(
            "INSERT INTO order_lines(order_id, line_no, sku_id, slot_id, qty, unit_price, status, price_rule) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (order_id, i, line["sku_id"], line["slot_id"], line["qty"], line["unit_price"], status,
             line.get("price_rule", "")))


async def finish_order(tx: Tx, order_id: str, status: str, *, refund_due: bool = False,
                       reason: str = "", total: int | None = None) -> dict[str, Any]:
    """Set the final state and queue the order for the cloud (stable record id: one per order)."""
    sets = "status=?, refund_due=?, reason=?, updated_at=?" + (", total_amount=?" if total is not None else "")
    params: list[Any] = [status, int(refund_due), reason, tx.now] + ([total] if total is not None else [])
    await tx.execute(f"UPDATE orders SET {sets} WHERE order_id=?", (*params, order_id))
    await tx.execute("UPDATE order_lines SET status=? WHERE order_id=?", (status, order_id))
    order = await order_doc(tx, order_id)
    await tx.outbox("order", order, record_id=f"order-{order_id}-{status}")
    return order


async def order_doc(tx: Tx | LedgerDB, order_id: str) -> dict[str, Any]:
    row = await tx.fetchone("SELECT * FROM orders WHERE order_id=?", (order_id,))
    if row is None:
        raise KeyError(order_id)
    doc = dict(row)
    doc["offline"] = bool(doc["offline"])
    doc["total"] = doc["total_amount"]  # the sync protocol's name
    doc["refund_due"] = bool(doc["refund_due"])
    db = tx.db if isinstance(tx, Tx) else (tx.ro or tx.db)
    async with db.execute("SELECT sku_id, slot_id, qty, unit_price, status, price_rule FROM order_lines "
                          "WHERE order_id=? "
                          "ORDER BY line_no", (order_id,)) as cur:
        doc["lines"] = [dict(r) for r in await cur.fetchall()]
    return doc


async def raise_alarm(tx: Tx, key: str, kind: str, message: str, *, severity: str = "warning",
                      data: Mapping[str, Any] | None = None) -> bool:
    """Raise once: returns False (and writes nothing) when the alarm is already active."""
    row = await tx.fetchone("SELECT active FROM alarms WHERE alarm_key=?", (key,))
    if row and row["active"]:
        return False
    payload = json.dumps(dict(data or {}))
    await tx.execute(
        "INSERT INTO alarms(alarm_key, kind, severity, active, raised_at, cleared_at, message, data) "
        "VALUES (?,?,?,1,?,NULL,?,?) ON CONFLICT(alarm_key) DO UPDATE SET active=1, raised_at=excluded.raised_at,"
        " cleared_at=NULL, message=excluded.message, data=excluded.data, severity=excluded.severity",
        (key, kind, severity, tx.now, message, payload))
    await tx.outbox("alarm", {"code": kind, "alarm_key": key, "kind": kind, "state": "raised", "severity": severity,
                              "message": message, "at": tx.now, "data": dict(data or {})})
    await tx.event("alarm_raised", {"alarm_key": key, "kind": kind, "message": message},
                   severity=severity, sync=False)
    return True


async def clear_alarm(tx: Tx, key: str, message: str = "") -> bool:
    """Clear once: returns False when the alarm is not active."""
    row = await tx.fetchone("SELECT kind, active FROM alarms WHERE alarm_key=?", (key,))
    if not row or not row["active"]:
        return False
    await tx.execute("UPDATE alarms SET active=0, cleared_at=? WHERE alarm_key=?", (tx.now, key))
    await tx.outbox("alarm", {"code": row["kind"], "alarm_key": key, "kind": row["kind"], "state": "cleared",
                              "message": message,
                              "at": tx.now})
    await tx.event("alarm_cleared", {"alarm_key": key, "kind": row["kind"]}, sync=False)
    return True


async def list_alarm(tx: Tx, key: str, kind: str, message: str | None, *, data: Mapping[str, Any] | None = None,
                     was_raised: bool = False, changed: bool = False, why_cleared: str = "") -> None:
    """The one alarm `key` that lists something (products, pairs): cleared and raised again when the
    list `changed` while it was raised (`was_raised`), raised with `message` and `data` while the list
    has anything (`message` not None), cleared (`why_cleared`) when it has nothing."""
    if was_raised and changed:
        await clear_alarm(tx, key, "the list changed")
    if message is None:
        await clear_alarm(tx, key, why_cleared)
    else:
        await raise_alarm(tx, key, kind, message, data=data)


async def sync_list_alarm(db: LedgerDB, key: str, kind: str, message: str | None, *,
                          data: Mapping[str, Any] | None = None, was_raised: bool = False, changed: bool = False,
                          why_cleared: str = "") -> None:
    """`list_alarm` in a transaction of its own, skipped when the list did not change and still has
    something (the alarm raised for it stands; an empty list is cleared again, which costs nothing)."""
    if not changed and message is not None:
        return
    async with db.tx() as tx:
        await list_alarm(tx, key, kind, message, data=data, was_raised=was_raised, changed=changed,
                         why_cleared=why_cleared)


async def active_alarms(db: LedgerDB) -> list[dict[str, Any]]:
    rows = await db.fetchall("SELECT * FROM alarms WHERE active=1 ORDER BY raised_at")
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


MAX_BOARD_SEQ = 0x7FFF_FFFF  # the board driver reserves the upper half for its own requests


async def next_board_seq(tx: Tx, at_least: int = 1) -> int:
    """A board sequence id never used before on this machine (vends, unlocks): stored in the ledger.

    ``at_least``: above every seq the board says it remembers (a new or restored ledger must not
    reuse one the board would answer from memory instead of acting on)."""
    row = await tx.fetchone("SELECT value FROM meta WHERE key='board_seq'")
    seq = max((int(row["value"]) if row else 0) + 1, at_least)
    if seq > MAX_BOARD_SEQ:  # never wrap onto a seq the board may still remember (2^31 vends: a lying board)
        raise SaleRefused("board_seq_exhausted", f"no board sequence id left above {seq - 1}: the board "
                                                 "reports remembering the top of the range; clear its memory")
    await tx.execute("INSERT INTO meta(key, value) VALUES ('board_seq', ?) "
                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(seq),))
    return seq

"""DEX figures from the ledger, and the read itself recorded in the same transaction.

Interim counters are not stored numbers that could drift: an interim read marks every finished order
it counted (`dex_read_orders`) and the last event id it saw (`dex_reads.last_event_id`), in the one
transaction that also reads the figures and queues the read for the cloud. A crash before COMMIT
leaves nothing marked (the next read counts the same interval again); after COMMIT each order and
event belongs to exactly one interim interval.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from edge.core.dex import DexFigures, EventFigure, Selection, Split, Tally, minor_units, render
from edge.ledger.db import LedgerDB, Tx
from edge.ledger.repo import current_planogram

MECHANICAL_REASONS = ("jam", "motor_overcurrent", "drop_not_detected")
TEMPERATURE_KINDS = ("temperature_high", "temperature_low", "food_safety_lockout")


@dataclass(frozen=True)
class Identity:
    """What ID1/ID4/CB1 say about the machine (from the config, not the ledger)."""

    machine_serial: str
    machine_model: str
    controller_id: str
    software_version: str
    currency: str  # "" = the planogram's currency
    decimals: int | None = None  # None = the currency's ISO 4217 minor units


@dataclass(frozen=True)
class DexRead:
    read_id: int
    kind: str
    text: str
    record_id: str


def _at(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


async def _all(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
    async with db.execute(sql, tuple(params)) as cur:
        return list(await cur.fetchall())


_SALES = """
SELECT l.slot_id AS slot,
       CASE WHEN o.kind = 'test_vend' THEN 'test' WHEN l.unit_price > 0 THEN 'paid' ELSE 'free' END AS cls,
       (r.order_id IS NULL) AS interim, SUM(l.qty) AS n, SUM(l.qty * l.unit_price) AS v,
       MAX(CASE WHEN o.kind != 'test_vend' THEN o.updated_at END) AS last_at
FROM orders o JOIN order_lines l USING (order_id) LEFT JOIN dex_read_orders r USING (order_id)
WHERE o.status = 'completed' GROUP BY 1, 2, 3"""


async def _selections(db: aiosqlite.Connection, ledger: LedgerDB) -> tuple[Selection, ...]:
    planogram = await current_planogram(ledger)
    stock = {r["slot_id"]: r for r in await _all(db, "SELECT slot_id, sku_id, count FROM stock")}
    figures: dict[str, dict[str, Any]] = {}
    for r in await _all(db, _SALES):
        f = figures.setdefault(r["slot"], {"paid": Split(), "test": Split(), "free": Split(), "last": None})
        tally = Tally(int(r["n"]), int(r["v"]))
        f[r["cls"]] = f[r["cls"]] + Split(tally, tally if r["interim"] else Tally())
        if r["last_at"] and (f["last"] is None or r["last_at"] > f["last"]):
            f["last"] = r["last_at"]
    out = []
    for slot in sorted(set(stock) | set(figures)):
        price = 0
        if planogram is not None and slot in planogram.slots:
            price = planogram.sku_for_slot(slot).price.amount
        f = figures.get(slot, {"paid": Split(), "test": Split(), "free": Split(), "last": None})
        out.append(Selection(slot, price, f["paid"], f["test"], f["free"], _at(f["last"]),
                             slot in stock and stock[slot]["count"] == 0))
    return tuple(out)


async def _jams(db: aiosqlite.Connection) -> EventFigure:
    marks = ",".join("?" * len(MECHANICAL_REASONS))
    row = (await _all(db, "SELECT COUNT(*) AS n, SUM(r.order_id IS NULL) AS i, MAX(o.updated_at) AS last "
                          "FROM orders o LEFT JOIN dex_read_orders r USING (order_id) "
                          f"WHERE o.status = 'failed' AND o.reason IN ({marks})", MECHANICAL_REASONS))[0]
    active = await _all(db, "SELECT 1 FROM alarms WHERE active = 1 AND kind = 'slot_disabled'")
    return EventFigure("jam", int(row["n"]), int(row["i"] or 0), _at(row["last"]), bool(active))


async def _events(db: aiosqlite.Connection, name: str, where: str, params: tuple[Any, ...],
                  since: int, active_sql: str) -> EventFigure:
    row = (await _all(db, f"SELECT COUNT(*) AS n, SUM(event_id > ?) AS i, MAX(at) AS last FROM events "
                          f"WHERE {where}", (since, *params)))[0]
    active = await _all(db, active_sql) if active_sql else []
    return EventFigure(name, int(row["n"]), int(row["i"] or 0), _at(row["last"]), bool(active))


async def _power(db: aiosqlite.Connection, since: int) -> tuple[EventFigure, Split]:
    """A power outage is a `mains_failed` event (the I/O module's mains-fail input), or — on a
    machine without that input, or when the cut was too quick to record — a `daemon_started` whose
    previous daemon event was not `daemon_stopped` (power cut, kill -9, crash) unless a
    `mains_failed` with no `mains_restored` after it already counted that outage (docs/protocols/dex.md)."""
    rows = await _all(db, "SELECT event_id, kind, at FROM events WHERE kind IN ('daemon_started', "
                          "'daemon_stopped', 'mains_failed', 'mains_restored') ORDER BY event_id")
    init = interim = 0
    last = None
    previous, counted = "daemon_stopped", False
    for r in rows:
        unclean = r["kind"] == "daemon_started" and previous == "daemon_started" and not counted
        if r["kind"] == "mains_failed" or unclean:
            init += 1
            interim += r["event_id"] > since
            last = r["at"]
        if r["kind"] in ("mains_failed", "mains_restored"):
            counted = r["kind"] == "mains_failed"  # an outage still open when the daemon died
            continue
        previous, counted = r["kind"], False if r["kind"] == "daemon_started" else counted
    return (EventFigure("power", init, interim, _at(last), False),
            Split(Tally(init), Tally(interim)))


async def _figures(db: aiosqlite.Connection, ledger: LedgerDB, ident: Identity) -> tuple[DexFigures, int, int]:
    """(figures, last interim read's event id, highest event id now)."""
    last = (await _all(db, "SELECT COUNT(*) AS n, MAX(last_event_id) AS e, MAX(at) AS at FROM dex_reads "
                           "WHERE kind = 'interim'"))[0]
    since = int(last["e"] or 0)
    top = (await _all(db, "SELECT COALESCE(MAX(event_id), 0) AS e FROM events"))[0]["e"]
    temp_marks = ",".join("?" * len(TEMPERATURE_KINDS))
    door = await _events(db, "door", "kind = 'door_opened'", (), since,
                         "SELECT 1 FROM alarms WHERE active = 1 AND kind LIKE 'door%'")
    temp = await _events(db, "temperature", f"kind = 'alarm_raised' AND json_extract(data, '$.kind') "
                         f"IN ({temp_marks})", TEMPERATURE_KINDS, since,
                         f"SELECT 1 FROM alarms WHERE active = 1 AND kind IN {TEMPERATURE_KINDS!r}")
    power, outages = await _power(db, since)
    currency = ident.currency
    planogram = await current_planogram(ledger)
    if not currency and planogram is not None and planogram.slots:  # the web page knows no config
        currency = planogram.sku_for_slot(next(iter(planogram.slots))).price.currency
    figures = DexFigures(ident.machine_serial, ident.machine_model, ident.controller_id, ident.software_version,
                         currency or "EUR", minor_units(currency or "EUR") if ident.decimals is None
                         else ident.decimals, await _selections(db, ledger),
                         (await _jams(db), door, temp, power), outages, int(last["n"]), _at(last["at"]))
    return figures, since, int(top)


async def read(ledger: LedgerDB, ident: Identity, *, interim: bool, actor: str = "") -> DexRead:
    """Build a DEX read and record it: the read row, (interim) the orders it counted and the last event
    id it saw, and an outbox record for the cloud — one transaction with the figures' own reads."""
    async with ledger.tx() as tx:
        return await _read(tx, ledger, ident, interim=interim, actor=actor)


async def _read(tx: Tx, ledger: LedgerDB, ident: Identity, *, interim: bool, actor: str) -> DexRead:
    figures, _, top = await _figures(tx.db, ledger, ident)
    now = _at(tx.now) or dt.datetime.now(dt.UTC)
    kind = "interim" if interim else "all"
    text = render(figures, now, resets=interim)
    seq = tx.next_seq()
    cur = await tx.execute("INSERT INTO dex_reads(seq, at, kind, last_event_id, actor, text) VALUES (?,?,?,?,?,?)",
                           (seq, tx.now, kind, top, actor, text))
    read_id = int(cur.lastrowid or 0)
    if interim:
        await tx.execute("INSERT INTO dex_read_orders(order_id, read_id) SELECT o.order_id, ? FROM orders o "
                         "LEFT JOIN dex_read_orders r USING (order_id) "
                         "WHERE r.order_id IS NULL AND o.status IN ('completed', 'failed')", (read_id,))
    record_id = await tx.outbox("dex_read", {"read_id": read_id, "kind": kind, "at": tx.now, "actor": actor,
                                             "text": text}, record_id=f"dex-read-{seq}")
    return DexRead(read_id, kind, text, record_id)


async def reads(ledger: LedgerDB, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent reads, newest first (without their text)."""
    rows = await ledger.fetchall("SELECT read_id, seq, at, kind, actor FROM dex_reads ORDER BY read_id DESC "
                                 "LIMIT ?", (limit,))
    return [dict(r) for r in rows]


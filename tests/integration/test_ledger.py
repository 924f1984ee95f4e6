import json
import sqlite3

import pytest

from edge.core.catalog import Planogram
from edge.core.errors import LedgerError
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.ledger.outbox import LedgerOutbox


@pytest.fixture
async def db(tmp_path, planogram_doc):
    d = await LedgerDB.open(str(tmp_path / "l.sqlite3"))
    async with d.tx() as tx:
        await repo.apply_planogram(tx, Planogram.from_doc(planogram_doc), "test")
    yield d
    await d.close()


async def test_wal_full_sync_and_schema(db):
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
    assert (await db.db.execute_fetchall("PRAGMA synchronous"))[0][0] == 2  # FULL
    assert await db.schema_version() >= 1
    assert await db.integrity_ok()


async def test_planogram_seeds_stock_rows(db):
    rows = await repo.stock(db)
    assert len(rows) == 50 and rows["A1"].count == 0 and rows["A1"].capacity == 8


async def test_transaction_is_all_or_nothing(db):
    with pytest.raises(RuntimeError):
        async with db.tx() as tx:
            await repo.change_stock(tx, "A1", 5, "restock")
            raise RuntimeError("power cut")
    assert (await repo.stock(db))["A1"].count == 0
    assert await LedgerOutbox(db).backlog() == 1  # only the planogram_applied event


async def test_sequence_is_monotonic_across_reopen(tmp_path, planogram_doc):
    path = str(tmp_path / "s.sqlite3")
    d = await LedgerDB.open(path)
    async with d.tx() as tx:
        await tx.event("a", {})
    first = await d.fetchall("SELECT seq FROM outbox")
    await d.close()
    d = await LedgerDB.open(path)
    async with d.tx() as tx:
        await tx.event("b", {})
    seqs = [r["seq"] for r in await d.fetchall("SELECT seq FROM outbox ORDER BY seq")]
    await d.close()
    assert seqs == sorted(set(seqs)) and seqs[0] == first[0]["seq"] and len(seqs) == 2


async def test_outbox_priority_ack_park_and_compact(db):
    async with db.tx() as tx:
        for i in range(3):
            await tx.outbox("telemetry", {"i": i})
        await tx.outbox("order", {"order_id": "o1"})
    box = LedgerOutbox(db)
    batch = await box.fetch_batch(10, 1_000_000)
    assert batch[0].kind == "order"
    await box.park(batch[1].record_id, "schema")
    await box.ack([b.record_id for b in batch[2:]])
    assert await box.backlog() == 2 and await box.parked() == 1  # the order + the parked-record alarm
    assert (await repo.active_alarms(db))[0]["kind"] == "outbox_parked"
    assert await box.compact("9999") == len(batch) - 2


async def test_alarm_raised_once_cleared_once(db):
    async with db.tx() as tx:
        assert await repo.raise_alarm(tx, "k", "high_temp", "hot")
        assert not await repo.raise_alarm(tx, "k", "high_temp", "hot")
    async with db.tx() as tx:
        assert await repo.clear_alarm(tx, "k")
        assert not await repo.clear_alarm(tx, "k")
    rows = await db.fetchall("SELECT payload FROM outbox WHERE kind='alarm'")
    assert len(rows) == 2



async def test_a_list_alarm_is_written_only_when_its_list_changed_or_emptied(db):
    async def active() -> list[tuple[str, str]]:
        return [(a["alarm_key"], a["message"]) for a in await repo.active_alarms(db)]

    # unchanged and non-empty: the caller raised it before, nothing is written (not even raised here)
    await repo.sync_list_alarm(db, "lst", "missing", "a, b", changed=False)
    assert await active() == []
    await repo.sync_list_alarm(db, "lst", "missing", "a, b", changed=True)
    assert await active() == [("lst", "a, b")]
    # a changed list while raised: cleared and raised again with the new message
    await repo.sync_list_alarm(db, "lst", "missing", "a", was_raised=True, changed=True)
    assert await active() == [("lst", "a")]
    # nothing left: cleared, changed or not
    await repo.sync_list_alarm(db, "lst", "missing", None, was_raised=True, changed=False, why_cleared="none left")
    assert await active() == []
    states = [json.loads(r["payload"])["state"] for r in await db.fetchall("SELECT payload FROM outbox WHERE kind='alarm'")]
    assert states == ["raised", "cleared", "raised", "cleared"]

async def test_write_error_surfaces_as_ledger_error(db):
    with pytest.raises(LedgerError):
        async with db.tx() as tx:
            await tx.execute("INSERT INTO nope VALUES (1)")
    # and the ledger still works afterwards
    async with db.tx() as tx:
        await tx.event("after", {})
    assert isinstance(await db.fetchone("SELECT 1"), sqlite3.Row)


async def test_cancelled_writer_never_leaves_a_transaction_open(db):
    import asyncio

    started = asyncio.Event()

    async def writer():
        async with db.tx() as tx:
            await tx.event("half", {})
            started.set()
            await asyncio.Event().wait()  # holds the transaction open until cancelled

    task = asyncio.create_task(writer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not db.db.in_transaction
    async with db.tx() as tx:  # the connection is usable and the half-written event is gone
        await tx.event("whole", {})
    kinds = [r["kind"] for r in await db.fetchall("SELECT kind FROM events")]
    assert "half" not in kinds and "whole" in kinds


async def test_a_lane_is_pure_from_a_restock_until_something_may_have_gone_in(db, planogram_doc):
    """`stock.mixed` (take-and-go's `ShelfObservation.pure`): unknown -> mixed; a technician's restock
    vouches for the lane; a session's `set_mixed` or another product in the planogram spoils it."""
    from edge.services.stock import StockService

    assert all(r.mixed for r in (await repo.stock(db)).values()) and await repo.pure_lanes(db) == set()
    await StockService(db).restock("F1", None, actor="tech")
    await StockService(db).restock("F2", 3, actor="tech")
    assert await repo.pure_lanes(db) == {"F1", "F2"}
    async with db.tx() as tx:
        await repo.set_mixed(tx, ["F2"], True)
    assert await repo.pure_lanes(db) == {"F1"} and (await repo.stock(db))["F2"].mixed
    doc = {**planogram_doc, "version": planogram_doc["version"] + 1}
    async with db.tx() as tx:  # the same products: F1 stays vouched for
        await repo.apply_planogram(tx, Planogram.from_doc(doc), "test")
    assert await repo.pure_lanes(db) == {"F1"}
    f1 = next(s for s in doc["slots"] if s["slot_id"] == "F1")
    other = next(s["sku_id"] for s in doc["slots"] if s["sku_id"] != f1["sku_id"] and s.get("shelf") is not None)
    doc = {**doc, "version": doc["version"] + 1,
           "slots": [{**s, "sku_id": other} if s["slot_id"] == "F1" else s for s in doc["slots"]]}
    async with db.tx() as tx:  # F1 gets another product: the old one may still be in it
        await repo.apply_planogram(tx, Planogram.from_doc(doc), "test")
    assert await repo.pure_lanes(db) == set()

"""Retention over a real SQLite ledger file with a hand-moved clock: what is owed to the cloud is
kept, acked history goes after `retention_days`, events/telemetry stay bounded, and the ledger
budget alarm is raised once and cleared once."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
from collections.abc import AsyncIterator

import pytest

from edge.clock import ManualClock, iso
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.ledger.outbox import LedgerOutbox
from edge.services.retention import Retention, RetentionPolicy
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(30)
DAY = 86_400.0


@pytest.fixture
async def ledger(tmp_path: pathlib.Path) -> AsyncIterator[tuple[LedgerDB, ManualClock]]:
    clock = ManualClock()
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"), clock)
    try:
        yield db, clock
    finally:
        await db.close()


async def _records(db: LedgerDB, n: int, kind: str = "telemetry", size: int = 40) -> list[str]:
    async with db.tx() as tx:
        return [await tx.outbox(kind, {"i": i, "pad": "x" * size}) for i in range(n)]


async def _count(db: LedgerDB, sql: str) -> int:
    row = await db.fetchone(sql)
    assert row is not None
    return int(row[0])


async def test_only_acked_records_older_than_retention_days_are_compacted(ledger) -> None:
    db, clock = ledger
    outbox = LedgerOutbox(db)
    old_acked = await _records(db, 30)
    await outbox.ack(old_acked)
    owed_for_ages = await _records(db, 5, "order")  # never acked: offline for weeks
    clock.advance(6 * DAY)
    recent_acked = await _records(db, 10)
    await outbox.ack(recent_acked)
    clock.advance(2 * DAY)  # old acks are 8 days old, recent ones 2
    retention = Retention(db, RetentionPolicy(retention_days=7))
    report = await retention.run_once()
    assert report.outbox_compacted == 30
    left = {r["record_id"] for r in await db.fetchall("SELECT record_id FROM outbox")}
    assert left == set(owed_for_ages) | set(recent_acked)
    assert await outbox.backlog() == 5  # still owed, still sent
    clock.advance(6 * DAY)
    assert (await retention.run_once()).outbox_compacted == 10
    assert await outbox.backlog() == 5


async def test_events_are_bounded_newest_kept_and_old_telemetry_pruned(ledger) -> None:
    db, clock = ledger
    async with db.tx() as tx:
        for i in range(120):
            await tx.event("probe", {"i": i}, sync=False)
        for minute in range(10):
            await tx.execute("INSERT INTO telemetry_1min(minute, point, avg, min, max) VALUES (?,?,?,?,?)",
                             (iso(clock.wall() + minute * 60), "fridge.t_c", 4.0, 3.9, 4.1))
    clock.advance(31 * DAY)
    async with db.tx() as tx:
        await tx.execute("INSERT INTO telemetry_1min(minute, point, avg, min, max) VALUES (?,?,?,?,?)",
                         (iso(clock.wall()), "fridge.t_c", 4.2, 4.0, 4.4))
    report = await Retention(db, RetentionPolicy(events_keep=50, telemetry_days=30)).run_once()
    assert report.telemetry_pruned == 10
    assert await _count(db, "SELECT COUNT(*) FROM telemetry_1min") == 1
    kept = [json.loads(r["data"]) for r in await db.fetchall(
        "SELECT data FROM events WHERE kind='probe' ORDER BY event_id")]
    assert await _count(db, "SELECT COUNT(*) FROM events") == 50
    assert kept[-1] == {"i": 119} and kept[0]["i"] > 119 - 50  # the newest survive


async def test_budget_alarm_raised_once_at_80_percent_and_cleared_once(ledger) -> None:
    db, clock = ledger
    outbox = LedgerOutbox(db)
    policy = RetentionPolicy(retention_days=1, budget_mb=1.0)
    retention = Retention(db, policy)
    first = await retention.run_once()
    assert first.alarm is None and first.budget_ratio < 0.8
    ids = await _records(db, 200, size=5000)  # ~1 MB of telemetry the cloud has not acked yet
    report = await retention.run_once()
    assert report.budget_ratio >= 0.8 and report.alarm == "raised"
    assert (await retention.run_once()).alarm is None  # raised once
    alarms = await repo.active_alarms(db)
    assert [a["kind"] for a in alarms] == ["ledger_budget"]
    assert alarms[0]["data"]["budget_bytes"] == 1024 * 1024
    await outbox.ack(ids)  # the link comes back and the cloud takes everything
    clock.advance(2 * DAY)
    report = await retention.run_once()
    assert report.outbox_compacted == 200 and report.alarm == "cleared"
    assert report.budget_ratio < 0.75 and await repo.active_alarms(db) == []
    assert (await retention.run_once()).alarm is None  # cleared once
    cloud = [json.loads(r["payload"])["state"] for r in await db.fetchall(
        "SELECT payload FROM outbox WHERE kind='alarm' ORDER BY seq")]
    assert cloud == ["raised", "cleared"]  # the cloud hears it once each way


async def test_wal_is_checkpointed_to_zero_bytes(ledger) -> None:
    db, _ = ledger
    await _records(db, 300, size=2000)
    wal = db.path + "-wal"
    assert os.stat(wal).st_size > 100_000
    report = await Retention(db, RetentionPolicy()).run_once()
    assert report.checkpointed and report.wal_bytes == 0 and os.stat(wal).st_size == 0
    assert await _count(db, "SELECT COUNT(*) FROM outbox") == 300  # nothing lost by the checkpoint


async def test_run_loop_repeats_passes_and_stops_on_cancel(ledger) -> None:
    db, clock = ledger
    await LedgerOutbox(db).ack(await _records(db, 3))
    clock.advance(10 * DAY)
    retention = Retention(db, RetentionPolicy(interval_s=0.01))
    task = asyncio.create_task(retention.run(), name="retention")
    await wait_for(lambda: retention.passes >= 3, 5.0, what="three retention passes")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert retention.passes >= 3
    assert await _count(db, "SELECT COUNT(*) FROM outbox") == 0

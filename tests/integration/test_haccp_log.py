"""HACCP hourly log over a real SQLite ledger with a hand-moved clock: the retention pass rolls the
1-minute telemetry into hours before pruning it, keeps the hours >= 90 days within a small budget,
counts minutes above the limit and lockouts, and reads not-yet-rolled hours live."""

from __future__ import annotations

import csv
import io
import json
import pathlib
from collections.abc import AsyncIterator

import pytest

from edge.clock import ManualClock, iso
from edge.ledger import haccp
from edge.ledger.db import LedgerDB
from edge.services.retention import Retention, RetentionPolicy

pytestmark = pytest.mark.timeout(60)
DAY, HOUR = 86_400.0, 3600.0
START = 1_800_000_000.0 - 1_800_000_000.0 % HOUR  # on the hour


@pytest.fixture
async def ledger(tmp_path: pathlib.Path) -> AsyncIterator[tuple[LedgerDB, ManualClock]]:
    clock = ManualClock(START)
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"), clock)
    try:
        yield db, clock
    finally:
        await db.close()


async def minutes(db: LedgerDB, start: float, temps: list[float], device: str = "fridge") -> None:
    """Minute rows exactly as the temperature service writes them (avg, min = avg - .2, max = avg + .2)."""
    async with db.tx() as tx:
        for i, c in enumerate(temps):
            await tx.execute(
                "INSERT OR REPLACE INTO telemetry_1min(minute, point, avg, min, max) VALUES (?,?,?,?,?)",
                (iso(start + 60 * i), f"{device}.cabinet_temp_c", c, c - 0.2, c + 0.2),
            )
            await tx.execute(
                "INSERT OR REPLACE INTO telemetry_1min(minute, point, avg, min, max) VALUES (?,?,?,?,?)",
                (iso(start + 60 * i), f"{device}.compressor_duty", 0.5, 0, 1),
            )


async def test_pass_rolls_complete_hours_and_survives_telemetry_pruning(ledger) -> None:
    db, clock = ledger
    await minutes(db, START, [3.0] * 60)  # hour 0: cold
    await minutes(db, START + HOUR, [4.0] * 50 + [6.0] * 10)  # hour 1: ten warm minutes
    await minutes(db, START + 2 * HOUR, [3.5] * 30)  # hour 2: running
    async with db.tx() as tx:
        await tx.execute(
            "INSERT INTO lockouts(kind, started_at, reason, data) VALUES ('food_safety', ?, "
            "'above_limit', ?)",
            (iso(START + HOUR + 3000), json.dumps({"peak_c": 6.2})),
        )
    clock.set(START + 2 * HOUR + 1800)
    retention = Retention(db, RetentionPolicy(telemetry_days=30, haccp_limit_c=5.0))
    await retention.run_once()
    rows = [dict(r) for r in await db.fetchall("SELECT * FROM haccp_hourly ORDER BY hour")]
    assert [r["hour"] for r in rows] == [iso(START)[:13], iso(START + HOUR)[:13]]  # the running hour waits
    assert (rows[0]["min_c"], rows[0]["max_c"], rows[0]["minutes_above"]) == (2.8, 3.2, 0)
    assert (
        rows[1]["minutes"] == 60 and rows[1]["minutes_above"] == 10 and rows[1]["max_c"] == pytest.approx(6.2)
    )
    assert rows[1]["mean_c"] == pytest.approx(4 + 2 * 10 / 60) and rows[1]["device"] == "fridge"

    hours = await haccp.hourly(db, iso(START), iso(clock.wall()), limit_c=5.0)  # live: the running hour too
    assert [h["minutes"] for h in hours] == [60, 60, 30]
    assert [h["exceeded"] for h in hours] == [False, True, False] and [
        h["lockouts_started"] for h in hours
    ] == [0, 1, 0]
    table = list(csv.DictReader(io.StringIO(haccp.to_csv(hours))))
    assert table[1]["hour_utc"] == iso(START + HOUR)[:13] + ":00Z" and table[1]["exceeded"] == "1"
    assert table[1]["minutes_above"] == "10" and table[1]["lockouts_started"] == "1"

    clock.set(START + 95 * DAY)  # the minutes are pruned after 30 days, the hours are not
    await retention.run_once()
    assert (await db.fetchone("SELECT COUNT(*) FROM telemetry_1min"))[0] == 0
    kept = await haccp.hourly(db, iso(START - HOUR), iso(clock.wall()), limit_c=5.0)
    assert [h["minutes"] for h in kept] == [60, 60, 30]  # the running hour was rolled by the later pass
    clock.set(START + 401 * DAY)
    await retention.run_once()
    assert (await db.fetchone("SELECT COUNT(*) FROM haccp_hourly"))[0] == 0


async def test_ninety_days_of_hours_fit_in_a_megabyte(ledger) -> None:
    db, _ = ledger
    retention = Retention(db, RetentionPolicy())
    await retention.checkpoint()
    before = (await retention.measure())[0]
    async with db.tx() as tx:
        for h in range(90 * 24):
            await tx.execute(
                "INSERT INTO haccp_hourly VALUES (?, 'fridge', 2.8, 4.9, 3.9, 60, 3, 5.0)",
                (iso(START - h * HOUR)[:13],),
            )
    await retention.checkpoint()
    grown = (await retention.measure())[0] - before
    assert 0 < grown < 512 * 1024  # ~200 KB: far inside any ledger budget


async def test_roll_up_is_idempotent_and_counts_against_the_given_limit(ledger) -> None:
    db, _ = ledger
    await minutes(db, START, [4.6] * 60)
    await haccp.roll_up(db, limit_c=4.5, before_iso=iso(START + 2 * HOUR))
    await haccp.roll_up(db, limit_c=4.5, before_iso=iso(START + 2 * HOUR))
    rows = await db.fetchall("SELECT minutes, minutes_above, limit_c FROM haccp_hourly")
    assert [tuple(r) for r in rows] == [(60, 60, 4.5)]

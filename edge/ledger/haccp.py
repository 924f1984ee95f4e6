"""HACCP temperature log: per hour min/max/mean of the cabinet probe, minutes above the food-safety
limit, and the lockouts — kept long after the 1-minute telemetry is pruned.

`roll_up` folds complete hours of `telemetry_1min` into `haccp_hourly` (idempotent: an hour is
rewritten from its minutes while they still exist). The retention pass calls it before it prunes
the minutes, and prunes this table after `keep_days` (400 by default: 90 days is the minimum a
food inspector may ask for). One row per device-hour is ~100 bytes: 400 days of one fridge is
~1 MB of a ledger budget counted in hundreds of MB.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from edge.ledger.db import LedgerDB

POINT = "cabinet_temp_c"
CSV_COLUMNS = (
    "hour_utc",
    "device",
    "min_c",
    "max_c",
    "mean_c",
    "minutes",
    "minutes_above",
    "limit_c",
    "exceeded",
    "lockouts_started",
)


def hour_of(iso_ts: str) -> str:
    """'2027-01-15T08:12:00.000Z' -> '2027-01-15T08' (the hour key; ISO strings sort by time)."""
    return iso_ts[:13]


async def roll_up(db: LedgerDB, *, limit_c: float, before_iso: str, since_iso: str | None = None) -> int:
    """Fold every complete hour of minutes in [since, before) into haccp_hourly; returns hours written.

    An hour is complete once `before_iso` is past it, so call with the current time: the running
    hour is left for the next pass. `since_iso` None = from the last hour already rolled up (so a
    pass reads only new minutes). Points are '<device>.cabinet_temp_c'.
    """
    async with db.tx() as tx:
        if since_iso is None:
            last = await tx.fetchone("SELECT MAX(hour) AS h FROM haccp_hourly")
            since_iso = "" if last is None or last["h"] is None else str(last["h"])
        cur = await tx.execute(
            "INSERT OR REPLACE INTO haccp_hourly(hour, device, min_c, max_c, mean_c, minutes, minutes_above, "
            "limit_c) " + _FROM_MINUTES,
            _minute_params(limit_c, since_iso, hour_of(before_iso)),
        )
        return int(cur.rowcount)


_FROM_MINUTES = (
    "SELECT substr(minute, 1, 13) AS hour, substr(point, 1, length(point) - ?) AS device, MIN(min), MAX(max), "
    "AVG(avg), COUNT(*), SUM(max > ?), ? FROM telemetry_1min WHERE point LIKE ? AND minute >= ? "
    "AND substr(minute, 1, 13) < ? GROUP BY hour, device"
)
_COLUMNS = ("hour", "device", "min_c", "max_c", "mean_c", "minutes", "minutes_above", "limit_c")


def _minute_params(limit_c: float, since_iso: str, stop_hour: str) -> tuple[Any, ...]:
    return (len(POINT) + 1, limit_c, limit_c, f"%.{POINT}", since_iso, stop_hour)


async def prune(db: LedgerDB, before_iso: str) -> int:
    """Drop hours older than `before_iso`; returns rows removed."""
    async with db.tx() as tx:
        cur = await tx.execute("DELETE FROM haccp_hourly WHERE hour < ?", (hour_of(before_iso),))
        return int(cur.rowcount)


async def hourly(db: LedgerDB, since_iso: str, until_iso: str, *, limit_c: float) -> list[dict[str, Any]]:
    """Hours from the one holding `since` to the one holding `until` (both included), oldest first,
    each with the number of lockouts that started in it. Hours not rolled up yet (the last pass was
    up to an hour ago, and the running hour) are read from the minutes against `limit_c`, unwritten."""
    since_h, until_h = hour_of(since_iso), hour_of(until_iso)
    rows = [
        dict(r)
        for r in await db.fetchall(
            "SELECT " + ", ".join(_COLUMNS) + " FROM haccp_hourly WHERE hour >= ? AND hour <= ?",
            (since_h, until_h),
        )
    ]
    last = await db.fetchone("SELECT MAX(hour) AS h FROM haccp_hourly")
    fresh = (
        since_h if last is None or last["h"] is None else max(since_h, str(last["h"]) + "~")
    )  # '~' > digits
    rows += [
        dict(zip(_COLUMNS, r, strict=True))
        for r in await db.fetchall(_FROM_MINUTES, _minute_params(limit_c, fresh, until_h + "~"))
    ]
    locks: dict[str, int] = {}
    for lk in await lockouts(db, since_iso, until_iso):
        locks[hour_of(lk["started_at"])] = locks.get(hour_of(lk["started_at"]), 0) + 1
    for d in rows:
        d["mean_c"] = round(d["mean_c"], 2)
        d["exceeded"] = d["max_c"] > d["limit_c"]
        d["lockouts_started"] = locks.get(d["hour"], 0)
    return sorted(rows, key=lambda d: (d["hour"], d["device"]))


async def lockouts(db: LedgerDB, since_iso: str, until_iso: str) -> list[dict[str, Any]]:
    """Food-safety lockouts that started in [since, until) or were still open at `since`."""
    rows = await db.fetchall(
        "SELECT lockout_id, started_at, cleared_at, cleared_by, reason, data FROM lockouts "
        "WHERE kind = 'food_safety' AND started_at < ? AND (started_at >= ? OR cleared_at IS NULL "
        "OR cleared_at >= ?) ORDER BY lockout_id",
        (until_iso, since_iso, since_iso),
    )
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


def summary(hours: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals for the page header: hours logged, hours exceeded, minutes above, lowest/highest."""
    hs = list(hours)
    return {
        "hours": len(hs),
        "hours_exceeded": sum(1 for h in hs if h["exceeded"]),
        "minutes_above": sum(h["minutes_above"] for h in hs),
        "min_c": min((h["min_c"] for h in hs), default=None),
        "max_c": max((h["max_c"] for h in hs), default=None),
    }


def to_csv(hours: Iterable[dict[str, Any]]) -> str:
    """The log as CSV (one row per device-hour, UTC hours, °C)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for h in hours:
        w.writerow(
            [
                f"{h['hour']}:00Z",
                h["device"],
                h["min_c"],
                h["max_c"],
                h["mean_c"],
                h["minutes"],
                h["minutes_above"],
                h["limit_c"],
                int(h["exceeded"]),
                h["lockouts_started"],
            ]
        )
    return buf.getvalue()

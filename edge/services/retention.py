"""Ledger retention: the machine keeps what it still owes the cloud, and forgets the rest in time.

One pass (`Retention.run_once`) does, in order:
1. compact acked outbox records older than `retention_days` (`LedgerOutbox.compact`) — records
   not yet acked are never touched, however old: offline-first means they are still owed;
2. prune the local `events` table to the newest `events_keep` rows (events also went to the cloud
   as outbox records, so this only bounds the diagnostics history);
3. roll complete hours of telemetry into the HACCP log (`edge.ledger.haccp`), prune that log after
   `haccp_days`, then prune `telemetry_1min` rows older than `telemetry_days`;
4. measure the ledger (main file + WAL) against `budget_mb`: alarm `ledger_budget` at
   `alarm_ratio` (80 %), raised once, cleared once when it falls below `clear_ratio`;
5. every `checkpoint_every` passes, `PRAGMA wal_checkpoint(TRUNCATE)` so the WAL does not grow.

Size is measured as pages in use (page_count − freelist_count) × page_size plus the WAL file:
SQLite reuses freed pages, so after a compaction the file stops growing even though it does not
shrink on disk; the in-use figure is what tells whether the budget is still being approached.
`Retention.run` repeats the pass every `interval_s` under the supervisor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from edge.clock import SystemClock, iso
from edge.ledger import haccp, housekeeping
from edge.ledger.db import LedgerDB
from edge.ledger.outbox import LedgerOutbox
from edge.ledger.repo import clear_alarm, raise_alarm

log = structlog.get_logger(__name__)
ALARM_KEY = "ledger_budget"
DAY_S = 86_400.0
MB = 1024 * 1024


@dataclass(frozen=True)
class RetentionPolicy:
    """What to keep. `retention_days` and `budget_mb` come from `[sync]` in the config."""

    retention_days: float = 7.0
    budget_mb: float = 512.0
    events_keep: int = 200_000
    telemetry_days: float = 30.0
    haccp_days: float = 400.0  # the HACCP hourly log (>= 90 days asked for; ~1 MB a year)
    haccp_limit_c: float = 5.0  # the food-safety limit its "minutes above" are counted against
    alarm_ratio: float = 0.8
    clear_ratio: float = 0.75  # hysteresis: a ledger hovering at 80 % does not flap the alarm
    interval_s: float = 3600.0
    checkpoint_every: int = 1


@dataclass(frozen=True)
class RetentionReport:
    """What one pass did and saw."""

    outbox_compacted: int
    events_pruned: int
    telemetry_pruned: int
    used_bytes: int
    file_bytes: int
    wal_bytes: int
    budget_ratio: float
    alarm: str | None  # "raised" | "cleared" | None (no change)
    checkpointed: bool


class Retention:
    """Runs retention passes over one ledger. Time comes from the injected clock."""

    def __init__(self, db: LedgerDB, policy: RetentionPolicy, clock: SystemClock | None = None) -> None:
        self.db = db
        self.policy = policy
        self.clock = clock or db.clock
        self.outbox = LedgerOutbox(db)
        self.passes = 0

    async def run(self) -> None:
        """Forever: one pass, then sleep `interval_s`. A failed pass is logged and retried next time."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a full disk or locked file must not end retention for good
                log.exception("retention_pass_failed")
            await asyncio.sleep(self.policy.interval_s)

    async def run_once(self) -> RetentionReport:
        """One pass (see the module docstring); returns what it did."""
        now = self.clock.wall()
        compacted = await self.outbox.compact(iso(now - self.policy.retention_days * DAY_S))
        events = await self._prune_events()
        await haccp.roll_up(self.db, limit_c=self.policy.haccp_limit_c, before_iso=iso(now))
        await haccp.prune(self.db, iso(now - self.policy.haccp_days * DAY_S))
        telemetry = await self._prune_telemetry(iso(now - self.policy.telemetry_days * DAY_S))
        self.passes += 1
        checkpointed = self.passes % max(1, self.policy.checkpoint_every) == 0
        if checkpointed:
            await self.checkpoint()
        used, file_bytes, wal = await self.measure()
        ratio = used / (self.policy.budget_mb * MB)
        alarm = await self._budget_alarm(used, ratio)
        report = RetentionReport(compacted, events, telemetry, used, file_bytes, wal, round(ratio, 4),
                                 alarm, checkpointed)
        log.info("retention_pass", outbox_compacted=compacted, events_pruned=events,
                 telemetry_pruned=telemetry, used_mb=round(used / MB, 2), budget_ratio=report.budget_ratio)
        return report

    async def _prune_events(self) -> int:
        return await housekeeping.prune_events(self.db, self.policy.events_keep)

    async def _prune_telemetry(self, cutoff_iso: str) -> int:
        return await housekeeping.prune_telemetry(self.db, cutoff_iso)

    async def measure(self) -> tuple[int, int, int]:
        """(bytes in use incl. WAL, main file bytes, WAL bytes)."""
        return await housekeeping.measure(self.db)

    async def _budget_alarm(self, used: int, ratio: float) -> str | None:
        budget = int(self.policy.budget_mb * MB)
        async with self.db.tx() as tx:
            if ratio >= self.policy.alarm_ratio:
                pct = round(ratio * 100, 1)
                raised = await raise_alarm(
                    tx, ALARM_KEY, "ledger_budget", f"ledger at {pct} % of its {self.policy.budget_mb:g} MB budget",
                    severity="critical" if ratio >= 1 else "warning",
                    data={"used_bytes": used, "budget_bytes": budget, "percent": pct})
                return "raised" if raised else None
            if ratio < self.policy.clear_ratio and await clear_alarm(tx, ALARM_KEY, "ledger back under budget"):
                return "cleared"
        return None

    async def checkpoint(self) -> bool:
        """`PRAGMA wal_checkpoint(TRUNCATE)` between transactions; True when the WAL was emptied
        (False when a reader still held an old snapshot — the next pass tries again)."""
        busy = not await self.db.checkpoint()
        if busy:
            log.info("wal_checkpoint_busy")
        return not busy

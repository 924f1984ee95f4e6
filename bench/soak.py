"""Bench `soak`: a simulated week at accelerated time against the real daemon process.

The daemon runs in a subprocess with an injected manual clock (tests/support/run_daemon.py,
VENDEDGE_MANUAL_CLOCK=1); every session moves it forward by week/sessions, so ledger timestamps span
seven days and outbox compaction (`Retention.run_once` → `LedgerOutbox.compact`, retention 1 day)
really deletes. Sessions are sales from random spiral slots plus a restock whenever one is sold out;
sync to a reference cloud on loopback runs throughout. Checkpoints sample the daemon's RSS, open fds
and asyncio task count, and the ledger size. `python bench/run.py soak [--quick]`.
"""

from __future__ import annotations

import pathlib
import random
import tempfile
import time
from collections import Counter
from typing import Any

from tests.reliability.harness import SPIRAL, DaemonProc, Rig, check_invariants, make_rig

WEEK_S = 7 * 86_400
RSS_TARGET_MB = 5.0


def _session(rig: Rig, d: DaemonProc, rng: random.Random, counts: Counter[str]) -> None:
    slot = rng.choice(sorted(SPIRAL))
    ans = d.ask(f"sell {slot}") or {}
    if ans.get("refused") == "sold_out":
        rig.fill(slot)
        assert d.ask(f"restock {slot}") is not None
        counts["restocks"] += 1
    else:
        counts["sale_" + str(ans.get("status") or ans.get("refused") or ans.get("error"))] += 1


def _checkpoint(rig: Rig, d: DaemonProc, done: int, t0: float) -> dict[str, Any]:
    synced = d.ask("wait_synced 30") or {}
    ret = d.ask("retention") or {}
    stats = d.ask("stats") or {}
    return {"sessions": done, "rss_mb": round(stats["rss_kb"] / 1024, 2), "fds": stats["fds"],
            "tasks": stats["tasks"], "ledger_used_mb": round(ret.get("used_bytes", 0) / 2**20, 3),
            "ledger_file_mb": round(ret.get("file_bytes", 0) / 2**20, 3),
            "compacted": ret.get("outbox_compacted", 0), "backlog": synced.get("backlog"),
            "wall_s": round(time.monotonic() - t0, 1)}


def run(quick: bool = False, *, seed: int = 11) -> dict[str, Any]:
    """Soak the daemon for 10,000 sessions (2,000 with quick) over one simulated week."""
    sessions = 2_000 if quick else 10_000
    every = max(100, sessions // 20)
    step_s = WEEK_S / sessions
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rig = make_rig(pathlib.Path(tmp), sync=True, motor_ms=1200, speed=1000.0, seed=seed,
                       sync_extra="retention_days = 1")
        try:
            d = rig.start_daemon(env={"VENDEDGE_MANUAL_CLOCK": "1"})
            for slot in sorted(SPIRAL):
                rig.fill(slot)
                assert d.ask(f"restock {slot}") is not None
            t0 = time.monotonic()
            samples.append(_checkpoint(rig, d, 0, t0))
            for i in range(1, sessions + 1):
                d.ask(f"advance {step_s:.3f}")
                _session(rig, d, rng, counts)
                if i % every == 0:
                    samples.append(_checkpoint(rig, d, i, t0))
            assert d.quit() == 0, rig.log_tail()
            violations = check_invariants(rig, compacted=sum(s["compacted"] for s in samples))
            cloud_records = len(rig.cloud.record_ids()) if rig.cloud else 0
        finally:
            rig.stop()
    return _report(sessions, samples, counts, violations, cloud_records)


def _report(sessions: int, samples: list[dict[str, Any]], counts: Counter[str], violations: list[str],
            cloud_records: int) -> dict[str, Any]:
    warm = samples[min(2, len(samples) - 1)]  # after ~10 % of the week: caches and pools are warm
    last = samples[-1]
    growth = round(last["rss_mb"] - warm["rss_mb"], 2)
    return {
        "sessions": sessions, "simulated_days": 7, "workload": dict(sorted(counts.items())),
        "rss_mb_start": samples[0]["rss_mb"], "rss_mb_warm": warm["rss_mb"], "rss_mb_end": last["rss_mb"],
        "rss_growth_mb": growth, "rss_target_mb": RSS_TARGET_MB, "rss_ok": growth <= RSS_TARGET_MB,
        "fds_start": samples[0]["fds"], "fds_end": last["fds"], "fds_max": max(s["fds"] for s in samples),
        "tasks_start": samples[0]["tasks"], "tasks_end": last["tasks"],
        "tasks_max": max(s["tasks"] for s in samples),
        "ledger_used_mb_end": last["ledger_used_mb"], "ledger_file_mb_end": last["ledger_file_mb"],
        "outbox_compacted_total": sum(s["compacted"] for s in samples), "cloud_records": cloud_records,
        "invariant_violations": violations[:10], "wall_s": last["wall_s"],
        "sessions_per_s": round(sessions / max(last["wall_s"], 0.001), 1), "samples": samples,
    }

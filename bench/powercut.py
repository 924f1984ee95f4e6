"""Bench `powercut`: SIGKILL the real daemon at random moments of a busy mixed workload, N times.

Workload (seeded): sales from random spiral slots, technician restocks (physical fill, then the
restock on the machine), and sync to a real reference cloud on loopback the whole time. A timer
kills the daemon at a random moment; the harness restarts it, waits for reconciliation and for the
outbox to drain, re-presses a restock the kill interrupted (a technician would), and checks every
invariant of tests/reliability/harness.py. `python bench/run.py powercut --kills 200`.
"""

from __future__ import annotations

import pathlib
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from tests.reliability.harness import SPIRAL, DaemonProc, Rig, check_invariants, make_rig

SLOTS = sorted(SPIRAL)


def _workload(rig: Rig, d: DaemonProc, rng: random.Random, stats: Counter[str]) -> str | None:
    """Drive sales/restocks until the daemon dies; returns the slot of an unconfirmed restock."""
    while True:
        slot = rng.choice(SLOTS)
        if rng.random() < 0.85:
            ans = d.ask(f"sell {slot}")
            if ans is None:
                return None
            stats["sell_" + str(ans.get("status") or ans.get("refused") or "error")] += 1
            if ans.get("refused") != "sold_out":
                continue
        rig.fill(slot)  # sold out, or a routine visit: the technician fills the spiral, then confirms
        if d.ask(f"restock {slot}") is None:
            return slot
        stats["restocks"] += 1


def _cycle(rig: Rig, d: DaemonProc, rng: random.Random, stats: Counter[str]) -> tuple[DaemonProc, list[str]]:
    """One power cut: work, die at a random moment, restart, settle, check."""
    timer = threading.Timer(rng.uniform(0.02, 0.6), d.kill)
    timer.start()
    try:
        unconfirmed = _workload(rig, d, rng, stats)
    finally:
        timer.cancel()
    d.kill()  # in case the workload ended for another reason
    d.wait()
    open_vends, backlog = _at_kill(rig)
    stats["kills_mid_vend"] += bool(open_vends)
    stats["kills_mid_restock"] += unconfirmed is not None
    stats["kills_with_sync_backlog"] += bool(backlog)
    d = rig.restart()
    if unconfirmed is not None:
        assert d.ask(f"restock {unconfirmed}") is not None
    if rig.cloud is not None:
        ans = d.ask("wait_synced 20") or {}
        if ans.get("backlog") != 0:
            return d, [f"outbox did not drain after restart: {ans}"]
    return d, check_invariants(rig)


def _at_kill(rig: Rig) -> tuple[int, int]:
    """What the power cut interrupted: open vend journal entries and unacked outbox records."""
    con = sqlite3.connect(f"file:{rig.db_path}?mode=ro", uri=True)
    try:
        open_vends = con.execute("SELECT COUNT(*) FROM vend_journal WHERE state != 'done'").fetchone()[0]
        backlog = con.execute("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0]
    finally:
        con.close()
    return int(open_vends), int(backlog)


def run(kills: int, *, seed: int = 7, sync: bool = True, state_dir: str | None = None) -> dict[str, Any]:
    """Kill the daemon `kills` times; report kills survived, invariant violations and time per kill."""
    rng = random.Random(seed)
    stats: Counter[str] = Counter()
    violations: list[dict[str, Any]] = []
    times: list[float] = []
    with tempfile.TemporaryDirectory(dir=state_dir) as tmp:
        rig = make_rig(pathlib.Path(tmp), sync=sync, motor_ms=400, speed=20.0, seed=seed)
        try:
            d = rig.start_daemon()
            for slot in SLOTS:
                rig.fill(slot)
            for slot in SLOTS:
                assert d.ask(f"restock {slot}") is not None
            for k in range(kills):
                t0 = time.monotonic()
                d, bad = _cycle(rig, d, rng, stats)
                times.append(time.monotonic() - t0)
                if bad:
                    violations.append({"kill": k + 1, "violations": bad[:5]})
            assert d.quit() == 0, rig.log_tail()
            final = check_invariants(rig)
            if final:
                violations.append({"kill": "final", "violations": final[:5]})
            ledger_mb = rig.db_path.stat().st_size / 1e6
        finally:
            rig.stop()
    return {
        "kills": kills, "kills_survived": kills - len([v for v in violations if v["kill"] != "final"]),
        "violations": len(violations), "violation_detail": violations[:10],
        "time_per_kill_s_median": round(statistics.median(times), 2) if times else None,
        "time_per_kill_s_max": round(max(times), 2) if times else None,
        "total_s": round(sum(times), 1), "sync": sync, "seed": seed,
        "workload": dict(sorted(stats.items())), "ledger_mb": round(ledger_mb, 2),
    }

"""Bench `checkout`: N seeded take-and-go sessions end to end through the daemon.

Each session runs the whole road: cloud-style authorization → before frames over HTTP from the
camera server → unlock over Modbus (I/O module) → a seeded customer opens the door, acts, lingers,
closes → lock → stable weights from the simulated load cells → after frames (random lighting, noise,
a hand over some cells) → ONNX recognition → fusion → order in the ledger. Latency is door close →
order committed, as the service measures it. The same seeds are also decided at component level
without the scales (vision only) — the "without weight fusion" figure.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.rigs.takeandgo import TakeAndGoRig, shop, start_takeandgo_rig


def _conditions(rng: random.Random, after: bool) -> dict[str, Any]:
    return {"lighting": rng.uniform(0.8, 1.2), "noise": rng.uniform(2.0, 6.0),
            "occlusion": rng.uniform(0.0, 0.35) if after else 0.0, "jitter_px": 2}


async def _refill(rig: TakeAndGoRig) -> None:
    """The technician's visit: every lane back to its home SKU, full, in the world and the ledger."""
    assert rig.daemon.machine is not None
    for slot, lane in rig.world.lanes.items():
        lane.items = [lane.home_sku] * lane.capacity
        await rig.daemon.machine.restock(slot, lane.capacity, actor="bench")
    rig.world.version += 1


def _score(decision: dict[str, Any] | None, truth: Counter[str]) -> str:
    if decision is None or decision["status"] == "needs_review":
        return "review"
    taken = {k: v for k, v in decision["taken"].items() if v}
    if decision["status"] == "nothing_taken":
        return "exact" if not +truth else "missed"
    return "exact" if taken == dict(+truth) else "false_charge"


async def run_daemon(sessions: int, seed: int, *, fusion: bool = True, rig_kwargs: dict[str, Any] | None = None,
                     prepare: Callable[[TakeAndGoRig], Awaitable[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The sessions through a daemon: `rig_kwargs` go to start_takeandgo_rig (another planogram and
    its artwork), `prepare` runs once before the first customer and its result is reported."""
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    steps: dict[str, list[float]] = {}  # the service's door close -> order timings, by step
    misses: list[dict[str, Any]] = []
    prepared: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        rig = await start_takeandgo_rig(d, seed=seed, fusion=fusion, **(rig_kwargs or {}))
        try:
            if prepare is not None:
                prepared = await prepare(rig)
            t0 = time.perf_counter()
            for i in range(sessions):
                if i % 8 == 0:
                    await _refill(rig)
                for k in rig.world.shelves():
                    rig.cameras.set_conditions(f"shelf{k}", **_conditions(rng, after=False))
                row, truth = await shop(rig, rng, session_id=f"bench-{seed}-{i}", linger_s=1.3,
                                        conditions=_conditions(rng, after=True))
                decision = json.loads(row["data"]).get("decision")
                removed = truth.removed if truth else Counter()
                outcome = _score(decision, removed)
                outcomes[outcome] += 1
                if outcome != "exact" and len(misses) < 20:  # what a tester looks at first
                    misses.append({"session": i, "outcome": outcome, "truth": dict(+removed),
                                   "taken": (decision or {}).get("taken"), "reasons": (decision or {}).get("reasons")})
                if rig.service.last_latency_ms is not None:
                    latencies.append(rig.service.last_latency_ms)
                    for step, ms in rig.service.last_timings.items():
                        steps.setdefault(step, []).append(ms)
        finally:
            await rig.stop()
    n = max(1, sessions)
    total = _p50_p95(latencies)
    return {"sessions": sessions, "seed": seed, "basket_accuracy": round(outcomes["exact"] / n, 4),
            "false_charge_rate": round(outcomes["false_charge"] / n, 4),
            "review_rate": round(outcomes["review"] / n, 4), "missed_rate": round(outcomes["missed"] / n, 4),
            "latency_p50_ms": total["p50"], "latency_p95_ms": total["p95"],
            "latency_steps_ms": {k: _p50_p95(v) for k, v in steps.items()},
            "wall_s": round(time.perf_counter() - t0, 1), "not_exact": misses, **prepared}


def _p50_p95(ms: list[float]) -> dict[str, float | None]:
    """Median and p95 (the nearest rank below) in ms, None for no samples."""
    v = sorted(ms)
    return {"p50": round(statistics.median(v), 1) if v else None,
            "p95": round(v[int(0.95 * (len(v) - 1))], 1) if v else None}


TARGETS = {"basket_accuracy": 0.99, "vision_only_accuracy": 0.97, "false_charge_rate": 0.002,
           "review_rate": 0.03, "latency_p95_ms": 300}


async def run_enrolled(sessions: int, seed: int, *, refs: int = 3, pairs: int = 6, how: str = "photos") -> dict[str, Any]:
    """The sessions with a never-seen catalogue enrolled through the daemon (bench/checkout_enrolled.py)."""
    from bench.checkout_enrolled import enroll_all, novel_planogram

    doc, art, designs = novel_planogram(seed, pairs=pairs)

    async def prepare(rig: TakeAndGoRig) -> dict[str, Any]:
        return {"enrollment": await enroll_all(rig, designs, refs=refs, seed=seed, how=how)}

    result = await run_daemon(sessions, seed, rig_kwargs={"planogram": doc, "art": art}, prepare=prepare)
    return {"catalogue": "novel", "lanes": len(designs), "lookalike_pairs": pairs, **result,
            "targets": {k: v for k, v in TARGETS.items() if k != "vision_only_accuracy"}}


async def run(sessions: int, seed: int, *, vision_only_daemon: bool = False) -> dict[str, Any]:
    """Fused through the daemon, plus both modes at component level; `vision_only_daemon` also
    runs the same sessions through a daemon whose config says `fusion = false` (twice the time)."""
    from bench.checkout_core import run as component

    result = await run_daemon(sessions, seed)
    if vision_only_daemon:
        result["vision_only_daemon"] = await run_daemon(sessions, seed, fusion=False)
    result["vision_only_component"] = component(sessions, seed, fusion=False)
    result["fused_component"] = component(sessions, seed, fusion=True)
    result["targets"] = dict(TARGETS)
    return result

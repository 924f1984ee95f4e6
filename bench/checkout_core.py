"""Take-and-go checkout accuracy and latency at component level (renderer -> recognizer -> fusion).

Per session: a fridge with random gaps; four shelf cameras render the *before* frames; a seeded
customer acts; the cameras render the *after* frames under random lighting, noise and a hand
partly over some cells; the shelves are weighed before and after with +-1 g noise; the recognizer
reads every cell; fusion decides; the decision is compared with the truth.

Latency is capture-to-decision for the door-close moment: recognizing the 4 after-frames
(640x480) plus the fusion decision. Before-frames are recognized when the door opens, off the
critical path, so they are not counted.

    .venv/bin/python -m bench.checkout_core --sessions 200 --seed 1        # prints JSON, both modes
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
import structlog

from edge.core.catalog import Planogram
from edge.core.fusion import CellObs, Decision, ShelfObservation, decide
from edge.services.evidence import cell_observations, doubt_gates
from hw_sim.camera.render import ShelfRenderer
from hw_sim.customers import Truth, apply, generate
from hw_sim.world import FridgeWorld, load_demo_planogram
from vision_models.recognizer import DEFAULT_MODEL_DIR, Recognizer
from vision_models.types import CellRoi

MODEL_DIR = DEFAULT_MODEL_DIR
SHELVES = (0, 1, 2, 3)


def _reset(world: FridgeWorld, rng: random.Random) -> None:
    """Refill every lane to a random level (0-3 gaps) so misplaces and empty cells happen."""
    with world._lock:  # the bench owns this world; reset it in place so renderers stay valid
        for lane in world.lanes.values():
            lane.items = [lane.home_sku] * (lane.capacity - rng.randint(0, 3))
        world.version += 1


def _conditions(rng: random.Random, after: bool) -> dict[str, Any]:
    return {"lighting": rng.uniform(0.8, 1.2), "noise": rng.uniform(2.0, 6.0),
            "occlusion": rng.uniform(0.0, 0.35) if after else 0.0, "jitter_px": 2}


def _weigh(world: FridgeWorld, rng: random.Random) -> dict[int, float]:
    return {s: world.shelf_grams(s) + rng.uniform(-1.0, 1.0) for s in SHELVES}


def _observe(rec: Recognizer, frames: dict[int, np.ndarray], rois: dict[int, list[CellRoi]]) -> dict[int, list[CellObs]]:
    out = {}
    for shelf, frame in frames.items():
        out[shelf] = cell_observations(rec.recognize(frame, rois[shelf]), *doubt_gates(rec))
    return out


def _session(world: FridgeWorld, renderers: dict[int, ShelfRenderer], rois: dict[int, list[CellRoi]],
             rec: Recognizer, plan: Planogram, rng: random.Random, nrng: np.random.Generator,
             fusion: bool) -> tuple[str, Truth, Decision, float]:
    _reset(world, rng)
    before_w = _weigh(world, rng)
    before_frames = {s: r.render(rng=nrng, **_conditions(rng, False)) for s, r in renderers.items()}
    before = _observe(rec, before_frames, rois)
    scenario = generate(world, rng)
    truth = apply(world, scenario)
    after_w = _weigh(world, rng)
    after_frames = {s: r.render(rng=nrng, **_conditions(rng, True)) for s, r in renderers.items()}
    t0 = time.perf_counter()
    after = _observe(rec, after_frames, rois)
    obs = [ShelfObservation(s, before[s], after[s], (after_w[s] - before_w[s]) if fusion else None)
           for s in SHELVES]
    decision = decide(obs, plan)
    return scenario.kind, truth, decision, (time.perf_counter() - t0) * 1000


def run(sessions: int, seed: int, fusion: bool = True) -> dict[str, Any]:
    """Run `sessions` simulated customers; return accuracy, review and latency figures as a dict."""
    doc = load_demo_planogram()
    plan = Planogram.from_doc(doc)
    world = FridgeWorld(doc)
    renderers = {s: ShelfRenderer(world, s, seed=seed + s) for s in SHELVES}
    rois = {s: [CellRoi.from_dict(c) for c in r.layout()] for s, r in renderers.items()}
    rec = Recognizer.load(MODEL_DIR)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    exact = charged_wrong = review = missed = 0
    lat: list[float] = []
    by_kind: dict[str, Counter[str]] = {}
    for _ in range(sessions):
        kind, truth, d, ms = _session(world, renderers, rois, rec, plan, rng, nrng, fusion)
        lat.append(ms)
        ok = d.status != "needs_review" and Counter(d.taken) == truth.removed
        exact += ok
        charged_wrong += d.status == "charge" and not ok
        missed += d.status == "nothing_taken" and bool(truth.removed)
        review += d.status == "needs_review"
        by_kind.setdefault(kind, Counter()).update({"n": 1, "exact": ok, "review": d.status == "needs_review",
                                                    "wrong": d.status != "needs_review" and not ok})
    q = statistics.quantiles(lat, n=20) if len(lat) > 1 else lat * 19
    return {"sessions": sessions, "seed": seed, "fusion": fusion,
            "basket_accuracy": round(exact / sessions, 4),
            "false_charge_rate": round(charged_wrong / sessions, 4),
            "missed_charge_rate": round(missed / sessions, 4),
            "review_rate": round(review / sessions, 4),
            "auto_accuracy": round(exact / max(1, sessions - review), 4),
            "latency_ms_p50": round(statistics.median(lat), 1), "latency_ms_p95": round(q[18], 1),
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is the JSON
    out = {"with_weight": run(args.sessions, args.seed, True), "vision_only": run(args.sessions, args.seed, False)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

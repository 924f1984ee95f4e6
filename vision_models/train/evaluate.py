"""Held-out evaluation of a model directory, as written into its model card (no torch needed).

    python -m vision_models.train.evaluate --data DIR [--model vision_models/models/shelf-v1]

re-scores the model on the held-out cells of DIR (written by `python -m hw_sim.camera.dataset`)
through the runtime `Recognizer` and rewrites the card's `evaluation` section in place. Training
(`python -m vision_models.train`) calls the same `evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from vision_models.recognizer import CARD_FILE, Recognizer
from vision_models.train.dataset import DataDir, DataError, HeldOut, as_strip
from vision_models.types import EMPTY

DOUBT_BELOW = 0.85  # edge.core.fusion.FusionParams.min_quality: the card says what it catches


def evaluate(rec: Recognizer, held: HeldOut, seeds: list[int],
             pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Cell accuracy on held-out frames (demo products only), overall and per slice, and how well
    the similarity flags the errors (`reliability`).

    Each frame's stored cell crops go through `recognize` as one batch, as a live frame would."""
    right, total = Counter[str](), Counter[str]()
    confusions: Counter[str] = Counter()
    sims: dict[str, list[float]] = {"right_clear": [], "right_occluded": [], "wrong": []}
    wrong_products = flagged = 0
    frames = held.frames()
    for frame in frames:
        strip, rois = as_strip(held.x[frame], held.cells[frame])
        cells = zip(rec.recognize(strip, rois), held.labels[frame], held.occlusion[frame], held.pair[frame],
                    strict=True)
        for det, t, occlusion, pair in cells:
            keys = ["all", "occluded_frames" if occlusion > 0 else "clear_frames",
                    "empty" if t == EMPTY else "items"]
            if pair:
                keys += ["lookalike", pair]
            for k in keys:
                total[k] += 1
                right[k] += det.label == t
            if det.label != t:
                confusions[f"{t}->{det.label}"] += 1
                sims["wrong"].append(det.similarity)
                if det.label != EMPTY:
                    wrong_products += 1
                    flagged += det.similarity < DOUBT_BELOW
            else:
                sims["right_occluded" if occlusion > 0 else "right_clear"].append(det.similarity)
    acc = {k: round(right[k] / total[k], 4) for k in total}
    return {"heldout_seeds": list(seeds), "frames": len(frames), "cells": total["all"],
            "cell_accuracy": acc["all"], "lookalike_accuracy": acc.get("lookalike"),
            "per_pair_accuracy": {f"{a}/{b}": acc.get(f"{a}/{b}") for a, b in pairs},
            "empty_accuracy": acc.get("empty"), "item_accuracy": acc.get("items"),
            "occluded_frames_accuracy": acc.get("occluded_frames"),
            "clear_frames_accuracy": acc.get("clear_frames"),
            "cells_per_slice": dict(total), "top_confusions": dict(confusions.most_common(8)),
            "reliability": _reliability(sims, wrong_products, flagged)}


def _reliability(sims: dict[str, list[float]], wrong_products: int, flagged: int) -> dict[str, Any]:
    """Similarity (cosine to the label's prototype) quantiles per group, and the share of wrong
    product readings fusion treats as doubtful (similarity below DOUBT_BELOW)."""
    def q(v: list[float]) -> dict[str, float] | None:
        if not v:
            return None
        a = np.asarray(v)
        return {f"p{p}": round(float(np.percentile(a, p)), 3) for p in (1, 5, 50)} | {"n": len(v)}

    return {"similarity": {k: q(v) for k, v in sims.items()}, "doubt_below": DOUBT_BELOW,
            "wrong_product_readings": wrong_products,
            "wrong_product_readings_flagged": round(flagged / wrong_products, 3) if wrong_products else None,
            "right_occluded_flagged": round(float(np.mean(np.asarray(sims["right_occluded"]) < DOUBT_BELOW)), 4)
            if sims["right_occluded"] else None}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="directory written by `python -m hw_sim.camera.dataset`")
    p.add_argument("--model", type=Path, default=Path("vision_models/models/shelf-v1"))
    a = p.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is the JSON
    try:
        data = DataDir(a.data)
        held = data.heldout()
    except DataError as exc:
        raise SystemExit(str(exc)) from exc
    rec = Recognizer.load(a.model, threads=1)
    card_path = a.model / CARD_FILE
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["evaluation"] = evaluate(rec, held, data.meta["heldout"]["seeds"], data.lookalike_pairs)
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    tmp.replace(card_path)
    json.dump(card["evaluation"], sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

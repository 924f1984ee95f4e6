"""Calibrate the recognizer's doubt margin on never-trained randomized designs; write it to the card.

    python -m vision_models.train.calibrate_doubt --model-dir vision_models/models/shelf-v1

Enrolls `--classes` procedurally generated designs (vision_models.train.randomized, a seed no
training run uses) from 3 views each into the model's gallery (in memory), reads `--tests` more
views of each, and sets `doubt.min_margin` to the smallest best-vs-second cosine margin that keeps
wrong-but-trusted reads at or below `--target` of all reads (reads below `--min-quality`
similarity are doubted anyway). The novel-product bench is never used here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision_models.recognizer import CARD_FILE, Recognizer
from vision_models.train.randomized import generate
from vision_models.types import CellRoi

CALIB_SEED = 424_242


def calibrate(rec: Recognizer, *, classes: int, tests: int, min_quality: float, target: float) -> dict:
    """The doubt section for `rec`'s card (the gallery in `rec` gains the calibration designs)."""
    x, _, _ = generate(classes, 3 + tests, rec.size, CALIB_SEED)
    views = x.reshape(classes, 3 + tests, *x.shape[1:])
    for k in range(classes):
        rec.enroll(f"calib_{k}", list(views[k, :3]))
    roi = [CellRoi("C", 0, 0, 0, rec.size, rec.size)]
    ok, sim, margin = [], [], []
    for k in range(classes):
        for v in views[k, 3:]:
            (d,) = rec.recognize(np.ascontiguousarray(v), roi)
            ok.append(d.label == f"calib_{k}")
            sim.append(d.similarity)
            margin.append(d.margin)
    ok_a, sim_a, m_a = np.array(ok), np.array(sim), np.array(margin)
    n = len(ok_a)
    best = 1.0
    for t in np.round(np.arange(0.0, 0.5, 0.005), 3):
        trusted = (sim_a >= min_quality) & (m_a >= t)
        if np.sum(trusted & ~ok_a) <= target * n:
            best = float(t)
            break
    trusted = (sim_a >= min_quality) & (m_a >= best)
    return {"min_quality": min_quality, "min_margin": best,
            "calibration": {"classes": classes, "reads": n, "seed": CALIB_SEED,
                            "top1": round(float(ok_a.mean()), 4),
                            "wrong_trusted_rate": round(float(np.sum(trusted & ~ok_a)) / n, 4),
                            "doubted_correct_rate": round(float(np.sum(~trusted & ok_a)) / max(1, ok_a.sum()), 4),
                            "target_wrong_trusted": target}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.calibrate_doubt")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--classes", type=int, default=60)
    p.add_argument("--tests", type=int, default=20)
    p.add_argument("--min-quality", type=float, default=0.85, help="FusionParams.min_quality")
    p.add_argument("--target", type=float, default=0.001)
    a = p.parse_args(argv)
    rec = Recognizer.load(a.model_dir)
    doubt = calibrate(rec, classes=a.classes, tests=a.tests, min_quality=a.min_quality, target=a.target)
    card_path = a.model_dir / CARD_FILE
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["doubt"] = doubt
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(doubt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

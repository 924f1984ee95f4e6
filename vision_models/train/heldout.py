"""Held-out check of a model directory on the *training* generator (the figure a retraining is
judged by before the novel bench is looked at once):

    python -m vision_models.train.heldout --model-dir vision_models/models/shelf-v2

`--classes` procedurally generated designs (vision_models.train.randomized) at a seed that no
training run (its own seed), validation (616161) or doubt calibration (424242) uses, drawn at camera
resolution (`CAMERA_PX`), so models of any input size read the same images. Each design is enrolled
through `Recognizer.enroll` from 3 clean views, `--gallery-size` designs per gallery as the doubt is
calibrated (`calibrate_doubt.read_in_galleries`, twins together); `--tests` shelf reads each are
recognized as cells.
Reported: top-1 without and with a second look (and the pair check, when the card has one) on every
read (threshold-free: what the embedding and the gallery do), and, with the card's doubt as
calibrated, top-1 as the runtime reads, look-alike top-1, wrong-but-trusted reads (of all reads) and
doubted right reads (of right reads).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from vision_models.recognizer import Recognizer
from vision_models.train.calibrate_doubt import GALLERY_SIZE, gallery_groups, read_in_galleries
from vision_models.train.randomized import CAMERA_PX, STYLES, generate
from vision_models.types import is_doubtful

HELDOUT_SEED = 737_373
REFS = 3


def check(model_dir: Path, *, classes: int = 200, tests: int = 20, gallery_size: int = GALLERY_SIZE,
          style: str = "flat") -> dict[str, Any]:
    rec = Recognizer.load(model_dir)
    x, _, partner = generate(classes, REFS + tests, CAMERA_PX, HELDOUT_SEED, clean_views=REFS, style=style)
    views = x.reshape(classes, REFS + tests, *x.shape[1:])
    names = [f"held_{k}" for k in range(classes)]
    truth = np.repeat(names, tests)
    twin = np.repeat(partner >= 0, tests)
    looks = {"plain": 0.0, "second_look_all": 9.0, "card": rec.second_look_below}
    read = dict(zip(looks, read_in_galleries(rec, views, REFS, classes, gallery_groups(partner, classes, gallery_size),
                                             names, list(looks.values())), strict=True))
    top1 = {name: np.array([d.label for d in dets]) == truth for name, dets in read.items()}
    dets = read["card"]
    ok = top1["card"]
    doubted = np.array([is_doubtful(d, rec.min_quality, rec.min_margin, rec.min_pair_z) for d in dets])
    return {"model": f"{rec.card['name']} {rec.card['version']}", "input_px": rec.size, "seed": HELDOUT_SEED,
            "classes": classes, "gallery_size": gallery_size, "style": style, "reads": len(truth),
            "top1_plain": round(float(top1["plain"].mean()), 4),
            "top1_second_look_all": round(float(top1["second_look_all"].mean()), 4),
            "top1": round(float(ok.mean()), 4),
            "lookalike_top1": round(float(ok[twin].mean()), 4),
            "wrong_trusted_rate": round(float(np.mean(~ok & ~doubted)), 4),
            "doubted_correct_rate": round(float(np.sum(ok & doubted) / max(1, ok.sum())), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.heldout")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--tests", type=int, default=20)
    p.add_argument("--gallery-size", type=int, default=GALLERY_SIZE, help="designs enrolled per gallery")
    p.add_argument("--style", choices=STYLES, default="flat", help="drawing style of the held-out designs")
    a = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(json.dumps(check(a.model_dir, classes=a.classes, tests=a.tests, gallery_size=a.gallery_size, style=a.style)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

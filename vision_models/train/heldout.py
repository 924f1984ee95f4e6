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

`--unenrolled-twins N` reports the open set at its hardest instead (`unenrolled_twins`): the second
twin of N pairs never enrolled, how often its reads are trusted as its enrolled sibling.
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
from vision_models.types import CellDetection, is_doubtful

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
    doubted = _doubted(rec, dets)
    return {"model": f"{rec.card['name']} {rec.card['version']}", "input_px": rec.size, "seed": HELDOUT_SEED,
            "classes": classes, "gallery_size": gallery_size, "style": style, "reads": len(truth),
            "top1_plain": round(float(top1["plain"].mean()), 4),
            "top1_second_look_all": round(float(top1["second_look_all"].mean()), 4),
            "top1": round(float(ok.mean()), 4),
            "lookalike_top1": round(float(ok[twin].mean()), 4),
            "wrong_trusted_rate": round(float(np.mean(~ok & ~doubted)), 4),
            "doubted_correct_rate": round(float(np.sum(ok & doubted) / max(1, ok.sum())), 4)}


def _doubted(rec: Recognizer, dets: Sequence[CellDetection]) -> np.ndarray:
    """Whether each read is doubted by `rec`'s card (`types.is_doubtful`)."""
    return np.array([is_doubtful(d, rec.min_quality, rec.min_margin, rec.min_pair_z) for d in dets], bool)


def withhold_twins(partner: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, partner in that order): the second twin of the first `count` look-alike pairs moved
    to the end (never enrolled: `read_in_galleries` enrolls a prefix), still each its sibling's
    partner so `gallery_groups` deals it into its sibling's gallery."""
    seconds = [k for k in range(len(partner)) if 0 <= partner[k] < k][:count]
    if len(seconds) < count:
        raise ValueError(f"only {len(seconds)} look-alike pairs to withhold a twin of, not {count}")
    order = np.array([k for k in range(len(partner)) if k not in set(seconds)] + seconds)
    at = np.empty(len(order), np.int64)
    at[order] = np.arange(len(order))
    return order, np.where(partner[order] >= 0, at[np.maximum(partner[order], 0)], -1)


def unenrolled_twins(model_dir: Path, *, classes: int = 300, pairs: int = 40, tests: int = 20,
                     gallery_size: int = GALLERY_SIZE) -> dict[str, Any]:
    """The open set at its hardest: a product nobody enrolled whose look-alike sibling (one mark
    apart) was. The held-out designs as `check` draws them, the second twin of `pairs` pairs never
    enrolled; how often its reads name the sibling, and are trusted so (charged as the sibling)."""
    rec = Recognizer.load(model_dir)
    x, _, partner = generate(classes, REFS + tests, CAMERA_PX, HELDOUT_SEED, clean_views=REFS)
    order, moved_partner = withhold_twins(partner, pairs)
    views = x.reshape(classes, REFS + tests, *x.shape[1:])[order]
    names = [f"held_{k}" for k in order]
    enrolled = classes - pairs
    (dets,) = read_in_galleries(rec, views, REFS, enrolled, gallery_groups(moved_partner, enrolled, gallery_size),
                                names, [rec.second_look_below])
    label = np.array([d.label for d in dets])
    doubted = _doubted(rec, dets)
    strange = np.repeat(np.arange(classes) >= enrolled, tests)
    sibling = np.repeat([names[j] if j >= 0 else "" for j in moved_partner], tests)
    as_sibling = (label == sibling) & strange
    return {"model": f"{rec.card['name']} {rec.card['version']}", "seed": HELDOUT_SEED, "classes": classes,
            "unenrolled_twins": pairs, "reads": int(strange.sum()),
            "read_as_sibling": round(float(as_sibling.sum() / strange.sum()), 4),
            "trusted_as_sibling": round(float(np.sum(as_sibling & ~doubted) / strange.sum()), 4),
            "trusted_as_any": round(float(np.sum(strange & ~doubted) / strange.sum()), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.heldout")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--classes", type=int, default=None, help="held-out designs (default 200; 300 with --unenrolled-twins)")
    p.add_argument("--tests", type=int, default=20)
    p.add_argument("--gallery-size", type=int, default=GALLERY_SIZE, help="designs enrolled per gallery")
    p.add_argument("--style", choices=STYLES, default="flat", help="drawing style of the held-out designs")
    p.add_argument("--unenrolled-twins", type=int, default=0,
                   help="instead: withhold the second twin of this many pairs and report how often its reads are "
                        "trusted as its enrolled sibling")
    a = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if a.unenrolled_twins > 0:
        print(json.dumps(unenrolled_twins(a.model_dir, classes=a.classes or 300, pairs=a.unenrolled_twins,
                                          tests=a.tests, gallery_size=a.gallery_size)))
        return 0
    print(json.dumps(check(a.model_dir, classes=a.classes or 200, tests=a.tests, gallery_size=a.gallery_size,
                           style=a.style)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

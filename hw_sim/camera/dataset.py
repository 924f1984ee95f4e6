"""Synthetic shelf-cell data for training the recognizer, written to files.

    python -m hw_sim.camera.dataset --out /tmp/shelf-data --seed 1000

One seed = one frame: a random shelf (seed % 4), lanes filled with random products (plus
misplaced items and gaps), random lighting, noise, jitter and hand occlusion, all drawn from
`numpy.random.default_rng(seed)`. Training uses seeds >= 1000; tests and the held-out evaluation
use seeds 0-999, so they never see a training frame.

The training step (`python -m vision_models.train --data DIR`) reads only the files written here
(`vision_models` never imports the simulator). Everything is deterministic: same arguments, same
bytes. Files in DIR (plain .npz, no pickles, plus `meta.json`):

- `train.npz`: `x` (N x size x size x 3 uint8 BGR cell crops), `labels`, `frame` (seed per cell)
- `gallery_refs.npz`: `labels` (demo SKUs + "empty"), `refs` (labels x refs x cell_h x cell_w x 3):
  uncropped full-lane cell renders, what a technician's enrollment shots look like
- `calib.npz`: `x`, `labels`, `frame` — the frames the softmax scale is calibrated on
- `heldout.npz`: `x`, `labels`, `frame`, `slot_id`, `position`, `occlusion` (the frame's hand
  occlusion, 0 = no hands), `pair` (look-alike pair "a/b" of the true label, "" if none)
- `latency.npz`: `frames` (F x 480 x 640 x 3), `roi` (F x cells x [x, y, w, h]), `slot_id`, `position`

Crops are the centred square of each cell ROI (side = short side), INTER_AREA-resized to `size`:
exactly what `vision_models.preprocess.crop_cells` does at runtime (a unit test pins this).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from hw_sim.camera.appearance import LOOKALIKE_PAIRS
from hw_sim.camera.render import ShelfRenderer, render_item
from hw_sim.world import FridgeWorld, load_demo_planogram

log = structlog.get_logger(__name__)

EMPTY = "empty"  # the label of a cell that shows bare shelf (same string as vision_models.EMPTY)
FORMAT = 1  # bump when the file layout changes
PLANOGRAM = load_demo_planogram()
DEMO_SKUS: list[str] = [s["sku_id"] for s in PLANOGRAM["skus"]]
__all__ = ["DEMO_SKUS", "EMPTY", "LOOKALIKE_PAIRS", "build", "cell_crops", "distractor_ids", "frame_cells",
           "item_images", "main", "reference_images", "render_frame", "sample_variation", "write_dataset"]


def distractor_ids(n: int) -> list[str]:
    """Extra made-up products (hash-derived packaging) that teach the embedding to tell apart
    packages it will only meet through enrollment. Never part of the shipped gallery."""
    return [f"distractor_{i:03d}" for i in range(n)]


def sample_variation(rng: np.random.Generator) -> dict[str, float | int]:
    """Camera conditions for one frame: the ranges the model card promises."""
    occl = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.05, 0.35))
    return {"lighting": float(rng.uniform(0.6, 1.4)), "noise": float(rng.uniform(0.0, 10.0)),
            "occlusion": occl, "jitter_px": int(rng.integers(0, 4))}


def _fill_lanes(world: FridgeWorld, shelf: int, pool: Sequence[str], rng: np.random.Generator,
                p_demo: float) -> None:
    for lane in world.lanes_on_shelf(shelf):
        home = str(rng.choice(DEMO_SKUS)) if rng.random() < p_demo else str(rng.choice(pool))
        count = int(rng.choice([2, 3, 4, 5, 6, 6, 6]))
        items = [home] * count
        for i in range(count):
            if rng.random() < 0.15:  # a misplaced return
                items[i] = str(rng.choice(DEMO_SKUS))
        lane.items = items


def _fill_lookalike_lanes(world: FridgeWorld, shelf: int, rng: np.random.Generator) -> None:
    """Hard-example lanes: each lane holds one member of a look-alike pair, with the partner
    mixed in (30 % of the items), gaps as usual — what the model confuses most, seen side by side."""
    partner = {a: b for p in LOOKALIKE_PAIRS for a, b in (p, p[::-1])}
    members = sorted(partner)
    for lane in world.lanes_on_shelf(shelf):
        home = str(rng.choice(members))
        count = int(rng.choice([2, 3, 4, 5, 6, 6, 6]))
        lane.items = [partner[home] if rng.random() < 0.3 else home for _ in range(count)]


def render_frame(seed: int, pool: Sequence[str] = (), p_demo: float = 1.0, lookalike: bool = False
                 ) -> tuple[np.ndarray, list[dict[str, Any]], list[str], dict[str, float | int]]:
    """Render frame `seed`: (BGR frame, cell layout dicts, true label per cell, camera variation).
    `lookalike` fills every lane with look-alike pairs (hard examples for training)."""
    rng = np.random.default_rng(seed)
    world = FridgeWorld(PLANOGRAM)
    shelf = seed % 4
    if lookalike:
        _fill_lookalike_lanes(world, shelf, rng)
    else:
        _fill_lanes(world, shelf, list(pool) or DEMO_SKUS, rng, p_demo)
    renderer = ShelfRenderer(world, shelf, seed=seed)
    var = sample_variation(rng)
    frame = renderer.render(rng=rng, **var)  # type: ignore[arg-type]
    layout = renderer.layout()
    snap = world.snapshot()
    labels = [snap[c["slot_id"]][c["position"]] if c["position"] < len(snap[c["slot_id"]]) else EMPTY
              for c in layout]
    return frame, layout, labels, var


def cell_crops(frame: np.ndarray, layout: Sequence[dict[str, Any]], size: int) -> np.ndarray:
    """Centred square of every cell (side = short side, clipped to the frame), INTER_AREA-resized:
    uint8 N x size x size x 3 — the same crop the runtime recognizer takes."""
    h, w = frame.shape[:2]
    out = np.empty((len(layout), size, size, 3), np.uint8)
    for i, c in enumerate(layout):
        side = min(int(c["w"]), int(c["h"]))
        x0, y0 = int(c["x"]) + (int(c["w"]) - side) // 2, int(c["y"]) + (int(c["h"]) - side) // 2
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
        if xb - xa < 2 or yb - ya < 2:
            raise ValueError(f"cell {c['slot_id']}/{c['position']} lies outside the {w}x{h} frame")
        out[i] = cv2.resize(frame[ya:yb, xa:xb], (size, size), interpolation=cv2.INTER_AREA)
    return out


def frame_cells(seed: int, size: int, pool: Sequence[str] = (), p_demo: float = 1.0, lookalike: bool = False
                ) -> tuple[np.ndarray, list[str], dict[str, float | int]]:
    """Render frame `seed` and cut its cells: (uint8 N x size x size x 3, labels, variation)."""
    frame, layout, labels, var = render_frame(seed, pool, p_demo, lookalike)
    return cell_crops(frame, layout, size), labels, var


def build(seeds: Iterable[int], size: int, pool: Sequence[str] = (), p_demo: float = 1.0,
          lookalike_seeds: Iterable[int] = ()) -> tuple[np.ndarray, list[str], list[int]]:
    """Cells of many frames stacked: (uint8 N x size x size x 3, labels, seed per cell);
    `lookalike_seeds` are extra frames whose lanes hold only look-alike pairs."""
    xs, ys, fs = [], [], []
    for seed, hard in [*((s, False) for s in seeds), *((s, True) for s in lookalike_seeds)]:
        x, y, _ = frame_cells(seed, size, pool, p_demo, hard)
        xs.append(x)
        ys.extend(y)
        fs.extend([seed] * len(y))
    return np.concatenate(xs), ys, fs


def reference_images(label: str, n: int, seed: int) -> list[np.ndarray]:
    """`n` reference views of one label for the gallery: full-lane renders under mild conditions
    (what a technician's enrollment shots look like); "empty" gives bare-shelf cells."""
    rng = np.random.default_rng([seed, sum(label.encode())])
    out: list[np.ndarray] = []
    while len(out) < n:
        world = FridgeWorld(PLANOGRAM)
        shelf = int(rng.integers(0, 4))
        for lane in world.lanes_on_shelf(shelf):
            lane.items = [] if label == EMPTY else [label] * lane.capacity
        r = ShelfRenderer(world, shelf, seed=int(rng.integers(1000, 2**31)))
        frame = r.render(lighting=float(rng.uniform(0.85, 1.15)), noise=3.0, rng=rng)
        cells = r.layout()
        for i in rng.choice(len(cells), size=min(6, n - len(out)), replace=False):
            c = cells[int(i)]
            out.append(frame[c["y"]:c["y"] + c["h"], c["x"]:c["x"] + c["w"]].copy())
    return out


def item_images(sku_id: str, n: int, size: int, seed: int) -> list[np.ndarray]:
    """`n` single-package renders (`render_item`), the images enrollment is tested with."""
    rng = np.random.default_rng(seed)
    return [render_item(sku_id, size, rng) for _ in range(n)]


def _seeds(first: int, n: int) -> list[int]:
    return [first, first + n - 1]


def _write_cells(path: Path, seeds: range, size: int, pool: Sequence[str] = (), p_demo: float = 1.0,
                 lookalike_seeds: range = range(0)) -> int:
    x, labels, frames = build(seeds, size, pool, p_demo, lookalike_seeds)
    np.savez(path, x=x, labels=np.array(labels), frame=np.array(frames, np.int32))
    return len(labels)


def _write_gallery(path: Path, labels: list[str], n: int, seed: int) -> None:
    refs = np.stack([np.stack(reference_images(lb, n, seed)) for lb in labels])
    np.savez(path, labels=np.array(labels), refs=refs)


def _write_heldout(path: Path, seeds: range, size: int) -> int:
    pair_of = {s: f"{a}/{b}" for a, b in LOOKALIKE_PAIRS for s in (a, b)}
    xs: list[np.ndarray] = []
    keys = ("labels", "frame", "slot_id", "position", "occlusion", "pair")
    cols: dict[str, list[Any]] = {k: [] for k in keys}
    for seed in seeds:
        frame, layout, labels, var = render_frame(seed)
        xs.append(cell_crops(frame, layout, size))
        for c, t in zip(layout, labels, strict=True):
            for k, v in (("labels", t), ("frame", seed), ("slot_id", c["slot_id"]),
                         ("position", c["position"]), ("occlusion", var["occlusion"]),
                         ("pair", pair_of.get(t, ""))):
                cols[k].append(v)
    np.savez(path, x=np.concatenate(xs), labels=np.array(cols["labels"]),
             frame=np.array(cols["frame"], np.int32), slot_id=np.array(cols["slot_id"]),
             position=np.array(cols["position"], np.int32),
             occlusion=np.array(cols["occlusion"], np.float32), pair=np.array(cols["pair"]))
    return len(cols["labels"])


def _write_latency(path: Path, seeds: range) -> None:
    rendered = [render_frame(s) for s in seeds]
    layouts = [lay for _, lay, _, _ in rendered]
    np.savez(path, frames=np.stack([f for f, _, _, _ in rendered]),
             roi=np.array([[[c["x"], c["y"], c["w"], c["h"]] for c in lay] for lay in layouts], np.int32),
             slot_id=np.array([[c["slot_id"] for c in lay] for lay in layouts]),
             position=np.array([[c["position"] for c in lay] for lay in layouts], np.int32))


def write_dataset(out: Path, a: argparse.Namespace) -> dict[str, Any]:
    """Render every set training and export need into `out`; returns (and writes) meta.json."""
    out.mkdir(parents=True, exist_ok=True)
    distractors = distractor_ids(a.distractors)
    train_seeds = range(a.seed, a.seed + a.frames)
    hard_seeds = range(a.seed + a.frames, a.seed + a.frames + a.lookalike_frames)
    n_train = _write_cells(out / "train.npz", train_seeds, a.size, DEMO_SKUS + distractors, p_demo=0.6,
                           lookalike_seeds=hard_seeds)
    log.info("train_cells_written", cells=n_train, frames=a.frames, lookalike_frames=a.lookalike_frames)
    gallery_labels = [*DEMO_SKUS, EMPTY]
    _write_gallery(out / "gallery_refs.npz", gallery_labels, a.gallery_refs, a.gallery_seed)
    n_calib = _write_cells(out / "calib.npz", range(a.calib_seed, a.calib_seed + a.calib_frames), a.size)
    n_held = _write_heldout(out / "heldout.npz", range(0, a.eval_frames), a.size)
    _write_latency(out / "latency.npz", range(0, a.latency_frames))
    meta = {
        "format": FORMAT, "generator": "hw_sim.camera.dataset", "command": _command(a), "size": a.size,
        "empty": EMPTY, "demo_skus": DEMO_SKUS, "distractors": distractors,
        "lookalike_pairs": [list(p) for p in LOOKALIKE_PAIRS],
        "train": {"file": "train.npz", "seeds": _seeds(a.seed, a.frames + a.lookalike_frames),
                  "frames": a.frames + a.lookalike_frames, "cells": n_train, "p_demo": 0.6,
                  "pool": "demo_skus + distractors", "lookalike_frames": a.lookalike_frames},
        "gallery": {"file": "gallery_refs.npz", "labels": gallery_labels, "refs_per_label": a.gallery_refs,
                    "ref_seed": a.gallery_seed},
        "calibration": {"file": "calib.npz", "seeds": _seeds(a.calib_seed, a.calib_frames),
                        "frames": a.calib_frames, "cells": n_calib},
        "heldout": {"file": "heldout.npz", "seeds": _seeds(0, a.eval_frames), "frames": a.eval_frames,
                    "cells": n_held},
        "latency": {"file": "latency.npz", "seeds": _seeds(0, a.latency_frames), "frames": a.latency_frames},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    log.info("dataset_written", out=str(out), train_cells=n_train, calib_cells=n_calib, heldout_cells=n_held)
    return meta


def _command(a: argparse.Namespace) -> str:
    return (f"python -m hw_sim.camera.dataset --out {a.out} --seed {a.seed} --frames {a.frames} "
            f"--distractors {a.distractors} --size {a.size} --gallery-seed {a.gallery_seed} "
            f"--gallery-refs {a.gallery_refs} --calib-seed {a.calib_seed} --calib-frames {a.calib_frames} "
            f"--eval-frames {a.eval_frames} --latency-frames {a.latency_frames}"
            + (f" --lookalike-frames {a.lookalike_frames}" if a.lookalike_frames else ""))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line of `python -m hw_sim.camera.dataset` (defaults = the shipped shelf-v1 data)."""
    p = argparse.ArgumentParser(prog="python -m hw_sim.camera.dataset",
                                description="Render the shelf recognizer's training and evaluation data.")
    p.add_argument("--out", type=Path, required=True, help="directory for the .npz/.json files")
    p.add_argument("--seed", type=int, default=1000, help="first training seed (>= 1000)")
    p.add_argument("--frames", type=int, default=1400, help="training frames (30 cells each)")
    p.add_argument("--distractors", type=int, default=48, help="made-up products mixed into training lanes")
    p.add_argument("--size", type=int, default=40, help="crop side in pixels (the model's input size)")
    p.add_argument("--gallery-seed", type=int, default=5000)
    p.add_argument("--gallery-refs", type=int, default=24, help="reference cells per gallery label")
    p.add_argument("--calib-seed", type=int, default=3000, help="first calibration seed (>= 1000)")
    p.add_argument("--calib-frames", type=int, default=200)
    p.add_argument("--eval-frames", type=int, default=400, help="held-out frames, seeds 0..N-1 (<= 1000)")
    p.add_argument("--latency-frames", type=int, default=4, help="full frames kept for the latency figure")
    p.add_argument("--lookalike-frames", type=int, default=0,
                   help="extra training frames (seeds after the --frames ones) whose lanes hold only "
                        "look-alike pairs, partner mixed in: hard examples")
    a = p.parse_args(argv)
    train_end = a.seed + a.frames + a.lookalike_frames
    if a.lookalike_frames < 0 or (a.seed < a.calib_seed + a.calib_frames and a.calib_seed < train_end):
        p.error("--lookalike-frames must be >= 0 and training seeds must not overlap calibration seeds")
    if a.seed < 1000 or a.calib_seed < 1000:
        p.error("training and calibration seeds must be >= 1000 (0-999 are for tests and evaluation)")
    if not 0 < a.eval_frames <= 1000 or not 0 < a.latency_frames <= a.eval_frames:
        p.error("need 0 < --latency-frames <= --eval-frames <= 1000")
    if min(a.frames, a.calib_frames, a.gallery_refs, a.size) < 1 or a.distractors < 0:
        p.error("--frames, --calib-frames, --gallery-refs and --size must be positive")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dataset; exit status 0."""
    a = parse_args(argv)
    write_dataset(a.out, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())

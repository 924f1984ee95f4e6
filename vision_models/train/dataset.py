"""Synthetic shelf-cell data rendered by the simulator's top-down shelf camera.

One seed = one frame: a random shelf (seed % 4), lanes filled with random products (plus
misplaced items and gaps), random lighting, noise, jitter and hand occlusion, all drawn from
`numpy.random.default_rng(seed)`. Training uses seeds >= 1000; tests and the held-out evaluation
use seeds 0-999, so they never see a training frame.

This is an offline tool (like `bench/`): it is the one place in `vision_models` that imports the
simulator, because the training data *is* simulator output. The runtime recognizer never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from hw_sim.camera.appearance import LOOKALIKE_PAIRS
from hw_sim.camera.render import ShelfRenderer, render_item
from hw_sim.world import FridgeWorld, load_demo_planogram
from vision_models.preprocess import crop_cells
from vision_models.types import EMPTY, CellRoi

PLANOGRAM = load_demo_planogram()
DEMO_SKUS: list[str] = [s["sku_id"] for s in PLANOGRAM["skus"]]
__all__ = ["DEMO_SKUS", "LOOKALIKE_PAIRS", "build", "frame_cells", "item_images", "reference_images",
           "render_frame"]


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


def render_frame(seed: int, pool: Sequence[str] = (), p_demo: float = 1.0
                 ) -> tuple[np.ndarray, list[CellRoi], list[str], dict[str, float | int]]:
    """Render frame `seed`: (BGR frame, cell ROIs, true label per cell, camera variation)."""
    rng = np.random.default_rng(seed)
    world = FridgeWorld(PLANOGRAM)
    shelf = seed % 4
    _fill_lanes(world, shelf, list(pool) or DEMO_SKUS, rng, p_demo)
    renderer = ShelfRenderer(world, shelf, seed=seed)
    var = sample_variation(rng)
    frame = renderer.render(rng=rng, **var)  # type: ignore[arg-type]
    layout = renderer.layout()
    snap = world.snapshot()
    labels = [snap[c["slot_id"]][c["position"]] if c["position"] < len(snap[c["slot_id"]]) else EMPTY
              for c in layout]
    return frame, [CellRoi.from_dict(c) for c in layout], labels, var


def frame_cells(seed: int, size: int, pool: Sequence[str] = (), p_demo: float = 1.0
                ) -> tuple[np.ndarray, list[str], dict[str, float | int]]:
    """Render frame `seed` and cut its cells: (uint8 N x size x size x 3, labels, variation)."""
    frame, rois, labels, var = render_frame(seed, pool, p_demo)
    return crop_cells(frame, rois, size), labels, var


def build(seeds: Iterable[int], size: int, pool: Sequence[str] = (), p_demo: float = 1.0
          ) -> tuple[np.ndarray, list[str]]:
    """Cells of many frames stacked: (uint8 N x size x size x 3, labels)."""
    xs, ys = [], []
    for seed in seeds:
        x, y, _ = frame_cells(seed, size, pool, p_demo)
        xs.append(x)
        ys.extend(y)
    return np.concatenate(xs), ys


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

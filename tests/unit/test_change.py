"""Which cells changed between two frames of a shelf camera (`vision_models.change`): the after
capture reads only those again, so a change the check misses is a read the session never gets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.novel.generator import draw_design, make_catalogue
from hw_sim.camera.appearance import appearance_for
from hw_sim.camera.render import ShelfRenderer, draw_item
from hw_sim.world import FridgeWorld, load_demo_planogram
from vision_models import CellRoi
from vision_models.change import CHANGE_LEVEL, changed_cells, exposure_gain


def _jpeg(img: np.ndarray, quality: int = 85) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _rois(r: ShelfRenderer) -> list[CellRoi]:
    return [CellRoi.from_dict(c) for c in r.layout()]


@pytest.fixture
def world() -> FridgeWorld:
    return FridgeWorld(load_demo_planogram())


@pytest.mark.parametrize("seed", range(4))
def test_an_untouched_shelf_is_unchanged_across_exposure_noise_and_jpeg(world: FridgeWorld, seed: int) -> None:
    rng = np.random.default_rng(seed)
    r = ShelfRenderer(world, seed % 4, seed=seed)
    a = _jpeg(r.render(lighting=0.8, noise=6.0, rng=rng))
    b = _jpeg(r.render(lighting=1.2, noise=6.0, rng=rng), quality=70)
    assert not changed_cells(a, b, _rois(r)).any()
    gain = exposure_gain(a.astype(np.float32), b.astype(np.float32))
    assert np.allclose(gain, 1.5, atol=0.08)  # 1.2 / 0.8


def test_a_take_changes_its_cell_and_nothing_else(world: FridgeWorld) -> None:
    rng = np.random.default_rng(1)
    r = ShelfRenderer(world, 0, seed=1)
    rois = _rois(r)
    a = _jpeg(r.render(lighting=1.1, rng=rng))
    world.take("F2")  # the front can leaves; the lane's other cans move up, so its last cell empties
    b = _jpeg(r.render(lighting=0.9, rng=rng))
    changed = {(roi.slot_id, roi.position) for roi, c in zip(rois, changed_cells(a, b, rois), strict=True) if c}
    assert changed and {slot for slot, _ in changed} == {"F2"}


def _twin_frames(world: FridgeWorld, mine: tuple, twin: tuple, sku: str) -> tuple[np.ndarray, np.ndarray, list[CellRoi]]:
    """The shelf with `sku` drawn as `mine`, then as `twin`, every package in the very same pose."""
    shelf = next(ln.shelf for ln in world.lanes.values() if ln.home_sku == sku)
    rng = np.random.default_rng(2)
    first, second = (ShelfRenderer(world, shelf, seed=5, art={sku: art}) for art in (mine, twin))
    return _jpeg(first.render(noise=5.0, rng=rng)), _jpeg(second.render(noise=5.0, rng=rng)), _rois(first)


@pytest.mark.parametrize(("sku", "twin"), [("cola", "cola_zero"), ("tea_peach", "tea_lemon"),
                                           ("yogurt_straw", "yogurt_van")])
def test_a_look_alike_in_the_same_pose_is_a_change(world: FridgeWorld, sku: str, twin: str) -> None:
    s = 64
    a, b, rois = _twin_frames(world, draw_item(appearance_for(sku), s), draw_item(appearance_for(twin), s), sku)
    changed = changed_cells(a, b, rois)
    snap = world.snapshot()
    holds = np.array([roi.position < len(snap[roi.slot_id]) and snap[roi.slot_id][roi.position] == sku
                      for roi in rois])
    assert holds.any() and changed[holds].all() and not changed[~holds].any()


def test_twins_drawn_in_another_style_one_small_mark_apart_are_a_change(world: FridgeWorld) -> None:
    # bench/novel's look-alikes: everything shared but a mark of ~12 % of the package, in another colour
    cat = make_catalogue(24, 12, seed=900_003)
    for i in range(0, 24, 2):
        a, b, rois = _twin_frames(world, draw_design(cat[i]), draw_design(cat[i + 1]), "water_sp")
        snap = world.snapshot()
        holds = np.array([roi.position < len(snap[roi.slot_id]) and snap[roi.slot_id][roi.position] == "water_sp"
                          for roi in rois])
        assert changed_cells(a, b, rois)[holds].all(), f"pair {cat[i].sku_id}"


def test_frames_of_another_size_or_shape_change_every_cell() -> None:
    rois = [CellRoi("A1", 0, 0, 0, 32, 32), CellRoi("A1", 1, 32, 0, 32, 32)]
    a = np.full((64, 64, 3), 100, np.uint8)
    assert changed_cells(a, np.full((64, 96, 3), 100, np.uint8), rois).all()
    assert changed_cells(a[..., 0], a[..., 0], rois).all()
    assert not changed_cells(a, a.copy(), rois).any()
    b = a.copy()
    b[10:14, 40:44] += int(CHANGE_LEVEL) + 2  # a 4 x 4 px patch, inside the second cell only
    assert changed_cells(a, b, rois).tolist() == [False, True]

"""The simulated shelf camera: what a technician would see in the camera view."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hw_sim.camera.appearance import APPEARANCES, LOOKALIKE_PAIRS, appearance_for
from hw_sim.camera.render import ShelfRenderer, render_item
from hw_sim.world import FridgeWorld, load_demo_planogram


@pytest.fixture
def world() -> FridgeWorld:
    return FridgeWorld(load_demo_planogram())


def _cell(frame: np.ndarray, c: dict) -> np.ndarray:
    return frame[c["y"]:c["y"] + c["h"], c["x"]:c["x"] + c["w"]]


def test_same_seed_same_frame_different_seed_different_frame(world: FridgeWorld) -> None:
    a = ShelfRenderer(world, 0, seed=7).render(occlusion=0.3)
    b = ShelfRenderer(world, 0, seed=7).render(occlusion=0.3)
    c = ShelfRenderer(world, 0, seed=8).render(occlusion=0.3)
    assert a.shape == (480, 640, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    r = ShelfRenderer(world, 1, seed=0)
    assert np.array_equal(r.render(rng=np.random.default_rng(3)), r.render(rng=np.random.default_rng(3)))


@pytest.mark.parametrize("size", [(640, 480), (320, 240), (1280, 720)])
def test_layout_is_five_lanes_by_six_positions_inside_the_frame(world: FridgeWorld, size: tuple[int, int]) -> None:
    w, h = size
    cells = ShelfRenderer(world, 2, width=w, height=h).layout()
    assert len(cells) == 30
    assert sorted({c["slot_id"] for c in cells}) == ["H1", "H2", "H3", "H4", "H5"]
    occupied = np.zeros((h, w), np.int32)
    for c in cells:
        assert 0 <= c["x"] and c["x"] + c["w"] <= w and 0 <= c["y"] and c["y"] + c["h"] <= h
        occupied[c["y"]:c["y"] + c["h"], c["x"]:c["x"] + c["w"]] += 1
    assert occupied.max() == 1  # cells never overlap
    lane = [c for c in cells if c["slot_id"] == "H1"]
    front, back = min(lane, key=lambda c: c["position"]), max(lane, key=lambda c: c["position"])
    assert front["y"] > back["y"]  # the front of the lane is the bottom of the image


def test_taking_items_empties_the_back_cells_and_leaves_other_lanes_unchanged(world: FridgeWorld) -> None:
    r = ShelfRenderer(world, 0, seed=1)
    before = r.render(noise=0.0, jitter_px=0, rng=np.random.default_rng(0))
    world.take("F1")
    world.take("F1")
    after = r.render(noise=0.0, jitter_px=0, rng=np.random.default_rng(0))
    cells = {(c["slot_id"], c["position"]): c for c in r.layout()}
    for pos in range(6):
        diff = np.abs(_cell(before, cells["F1", pos]).astype(int) - _cell(after, cells["F1", pos])).mean()
        if pos >= 4:  # the lane's last two cells emptied (items shift forward: front first)
            assert diff > 20
    empty = _cell(after, cells["F1", 5]).astype(float)
    assert empty.std(axis=(0, 1)).max() < 12  # textured steel, no package
    untouched = np.abs(_cell(before, cells["F3", 0]).astype(int) - _cell(after, cells["F3", 0])).mean()
    assert untouched < 4


def test_lighting_noise_and_hand_occlusion_change_the_picture(world: FridgeWorld) -> None:
    r = ShelfRenderer(world, 1, seed=2)
    base = r.render(noise=0.0, rng=np.random.default_rng(1))
    dim = r.render(noise=0.0, lighting=0.6, rng=np.random.default_rng(1))
    assert dim.mean() == pytest.approx(base.mean() * 0.6, rel=0.03)
    noisy = r.render(noise=10.0, rng=np.random.default_rng(1))
    assert 6 < (noisy.astype(float) - base).std() < 14
    hand = r.render(noise=0.0, occlusion=0.4, rng=np.random.default_rng(1))
    b, g, red = (hand[..., i].astype(int) for i in range(3))
    skin = (red > g + 25) & (g > b + 20) & (red > 170)
    b0, g0, r0 = (base[..., i].astype(int) for i in range(3))
    skin_before = (r0 > g0 + 25) & (g0 > b0 + 20) & (r0 > 170)
    assert skin.sum() > skin_before.sum() + 2000


def test_lookalike_pairs_share_shape_and_body_but_not_the_accent() -> None:
    for a, b in LOOKALIKE_PAIRS:
        pa, pb = APPEARANCES[a], APPEARANCES[b]
        assert (pa.shape, pa.body) == (pb.shape, pb.body)
        assert pa.accent != pb.accent
    img_a = render_item("cola", 76, np.random.default_rng(0))
    img_b = render_item("cola_zero", 76, np.random.default_rng(0))
    assert np.abs(img_a.astype(int) - img_b).mean() > 5


def test_unknown_sku_gets_a_stable_appearance_and_renders() -> None:
    assert "kombucha_ginger" not in APPEARANCES
    assert appearance_for("kombucha_ginger") == appearance_for("kombucha_ginger")
    assert appearance_for("kombucha_ginger") != appearance_for("kombucha_mint")
    img = render_item("kombucha_ginger", 76, np.random.default_rng(4))
    assert img.shape == (76, 76, 3) and img.dtype == np.uint8
    assert np.array_equal(img, render_item("kombucha_ginger", 76, np.random.default_rng(4)))


def test_misplaced_item_is_drawn_in_the_lane_it_was_put_in(world: FridgeWorld) -> None:
    r = ShelfRenderer(world, 0, seed=3)
    world.take("F3")
    world.put("F3", "cola")  # a cola put back into the orange lane
    frame = r.render(noise=0.0, jitter_px=0, rng=np.random.default_rng(0))
    cells = {(c["slot_id"], c["position"]): c for c in r.layout()}
    def centre(c: dict) -> np.ndarray:  # the middle of the cell: package only, no shelf
        cy, cx = c["y"] + c["h"] // 2, c["x"] + c["w"] // 2
        return frame[cy - 12:cy + 12, cx - 12:cx + 12]

    colour = {k: centre(c).reshape(-1, 3).mean(axis=0) for k, c in cells.items()}
    dist = lambda a, b: float(np.abs(colour[a] - colour[b]).sum())  # noqa: E731
    # looks like the colas of lane F1, not like the oranges behind it
    assert dist(("F3", 0), ("F1", 0)) * 3 < dist(("F3", 0), ("F3", 1))


def test_given_artwork_replaces_the_simulators_look_for_its_skus_only(world: FridgeWorld) -> None:
    """A tester's own artwork (any square size) is drawn for its SKU; the others keep appearance.py's look."""
    s = 120
    patch = np.zeros((s, s, 3), np.float32)
    patch[:, :] = (255.0, 0.0, 255.0)  # magenta: no simulator package is magenta
    alpha = np.zeros((s, s), np.float32)
    cv2.circle(alpha, (s // 2, s // 2), s // 2 - 4, 1.0, -1)
    plain = ShelfRenderer(world, 0, seed=3).render(noise=0.0, jitter_px=0, rng=np.random.default_rng(0))
    r = ShelfRenderer(world, 0, seed=3, art={"cola": (patch, alpha)})
    frame = r.render(noise=0.0, jitter_px=0, rng=np.random.default_rng(0))
    cells = {(c["slot_id"], c["position"]): c for c in r.layout()}

    def centre(img: np.ndarray, c: dict) -> np.ndarray:
        cy, cx = c["y"] + c["h"] // 2, c["x"] + c["w"] // 2
        return img[cy - 8:cy + 8, cx - 8:cx + 8].reshape(-1, 3).astype(float).mean(axis=0)

    b, g, red = centre(frame, cells[("F1", 0)])  # the cola lane
    assert b > 120 and red > 120 and g < 0.5 * min(b, red), (b, g, red)
    assert not np.allclose(centre(plain, cells[("F1", 0)]), (b, g, red), atol=30)
    assert np.array_equal(centre(frame, cells[("F3", 0)]), centre(plain, cells[("F3", 0)]))  # oranges as before
    with pytest.raises(ValueError, match="square"):
        ShelfRenderer(world, 0, art={"cola": (patch[:, :100], alpha)}).render()

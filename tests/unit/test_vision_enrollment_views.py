"""Enrollment views, per-SKU radius and quality, the second look, and train/runtime preprocessing parity
(issue 13). Designs come from the *training* generator (vision_models.train.randomized) at seeds no
training run or calibration uses; the novel bench is evaluation only and never appears here."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vision_models import DEFAULT_MODEL_DIR, EMPTY, CellRoi, Recognizer, is_doubtful
from vision_models.augment import TURNS, VIEWS_PER_IMAGE, enrollment_views, quarter_turns
from vision_models.preprocess import crop_cells, resize_square, to_tensor
from vision_models.train.randomized import generate

SEED = 515_151  # not a training, validation (616161) or calibration (424242) seed


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.load(DEFAULT_MODEL_DIR, threads=1)


@pytest.fixture(scope="module")
def designs() -> np.ndarray:
    """24 designs x (3 clean reference shots + 10 shelf reads), 64 px."""
    x, _, _ = generate(24, 13, 64, SEED, clean_views=3)
    return x.reshape(24, 13, 64, 64, 3)


def _read(rec: Recognizer, crops: np.ndarray, candidates: list[str] | None = None) -> list:
    frame = np.ascontiguousarray(np.concatenate(list(crops), axis=1))
    return rec.recognize(frame, [CellRoi("T", i, i * 64, 0, 64, 64) for i in range(len(crops))], candidates)


def test_enrollment_views_are_turns_of_the_reference_not_mirrors() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    cv2.putText(img, "F7", (8, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (40, 200, 250), 3)
    views = enrollment_views(img, 64)
    assert len(views) == VIEWS_PER_IMAGE == 56
    assert all(v.shape == (64, 64, 3) and v.dtype == np.uint8 for v in views)
    assert np.array_equal(views[0], img)  # the reference itself is one of its views
    turned = np.rot90(img, 1)  # cv2's +90 degrees is counter-clockwise, like np.rot90
    assert min(float(np.abs(v.astype(int) - turned).mean()) for v in views) < 1.0
    mirrored = np.ascontiguousarray(img[:, ::-1])
    assert min(float(np.abs(v.astype(int) - mirrored).mean()) for v in views) > 5.0
    again = enrollment_views(img, 64)
    assert all(np.array_equal(a, b) for a, b in zip(views, again, strict=True))  # same refs, same prototype


def test_every_turn_is_also_seen_under_a_finger_a_glare_spot_and_through_jpeg() -> None:
    img = np.full((64, 64, 3), (150, 90, 40), np.uint8)
    cv2.putText(img, "F7", (8, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (40, 200, 250), 3)
    views = enrollment_views(img, 64)
    per = VIEWS_PER_IMAGE // len(TURNS)
    for t in range(len(TURNS)):
        plain, finger, glare, jpeg = (views[t * per + k].astype(int) for k in (0, 4, 5, 6))
        covered = np.abs(finger - plain).sum(axis=2) > 30
        assert 0.03 < covered.mean() < 0.5  # a bar over part of the package, not all of it
        assert covered[[0, -1]].any() or covered[:, [0, -1]].any()  # reaching in from outside the cell
        assert not covered[31:33, 31:33].any()  # its tip stops short of the centre
        assert (glare >= plain).all() and glare.mean() > plain.mean() + 1  # light added, nothing darker
        assert 0 < np.abs(jpeg - plain).mean() < 12  # the same view, noisy and compressed


def test_reference_is_the_mean_of_all_views_and_its_radius_is_leave_one_out(rec: Recognizer,
                                                                           designs: np.ndarray) -> None:
    refs = list(designs[0, :3])
    proto, radius, spread = rec.reference(refs)
    spread_mean = spread.mean
    emb = np.stack([rec.embed(enrollment_views(im, rec.size)) for im in refs])
    mean = emb.reshape(-1, emb.shape[-1]).mean(axis=0)
    assert np.allclose(proto, mean / np.linalg.norm(mean), atol=1e-5)
    # the pair check's mean: of the same views' pair features (the model's pooled backbone channels)
    feats = np.concatenate([rec.pair_features(enrollment_views(im, rec.size)) for im in refs])
    assert spread_mean.shape == (rec.pair_dim,) and np.allclose(spread_mean, feats.mean(axis=0), atol=1e-5)
    loo = []
    for i in range(3):
        other = emb[[j for j in range(3) if j != i]].reshape(-1, emb.shape[-1]).mean(axis=0)
        loo.append(emb[i] @ (other / np.linalg.norm(other)))
    assert radius == pytest.approx(float(np.median(np.concatenate(loo))), abs=1e-5)
    single = rec.reference(refs[:1]).radius  # one image: its views against their own mean
    assert 0 < radius < 1 and 0 < single <= 1


def test_enrolled_skus_carry_a_radius_and_quality_is_judged_against_it(designs: np.ndarray) -> None:
    """The rule of cards before 2.5.0 (radius_slack), which the Recognizer still reads."""
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    rec.radius_slack, rec.max_spread_ratio = 0.14, None
    rec.enroll("design_a", list(designs[0, :3]))
    labels, _, radius = rec.gallery.entries()
    rad = dict(zip(labels, radius.tolist(), strict=True))
    assert np.isnan(rad["cola"]) and np.isfinite(rad["design_a"])
    floor = rad["design_a"] - rec.radius_slack
    for det in _read(rec, designs[0, 3:]):
        if det.label == "design_a":
            want = 1 - (1 - det.similarity) * (1 - rec.min_quality) / (1 - floor)
            assert det.quality == pytest.approx(min(1.0, max(0.0, want)), abs=2e-4)
            assert (det.quality < rec.min_quality) == (det.similarity < floor - 1e-4) or abs(det.similarity - floor) < 1e-3
        elif det.label != EMPTY and np.isnan(rad[det.label]):
            assert det.quality == det.similarity  # seed labels: plain similarity, as before


def test_the_second_look_turns_each_crop_and_zooms_into_its_90_and_270_degree_views() -> None:
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (2, 32, 32, 3), np.uint8)
    plain = quarter_turns(crops).reshape(3, 2, 32, 32, 3)
    for k in (1, 2, 3):
        assert np.array_equal(plain[k - 1], np.rot90(crops, k, axes=(1, 2)))
    zoomed = quarter_turns(crops, 1.2).reshape(3, 2, 32, 32, 3)
    assert np.array_equal(zoomed[1], plain[1])  # 180 degrees: as it is
    middle = crops[:, 13:19, 13:19].astype(int)  # the centre is kept (zoomed about it), the rim is not
    assert np.abs(np.rot90(zoomed[0], -1, axes=(1, 2))[:, 15:17, 15:17].astype(int) - middle[:, 2:4, 2:4]).mean() < 40
    assert not np.array_equal(zoomed[0], plain[0]) and not np.array_equal(zoomed[2], plain[2])
    assert Recognizer.load(DEFAULT_MODEL_DIR).second_look_zoom == 1.2  # the shipped card's


def test_a_doubtful_read_gets_a_second_look_from_four_quarter_turns(designs: np.ndarray) -> None:
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    rec.enroll("design_b", list(designs[1, :3]))
    crops = designs[1, 3:7]
    labels, protos = rec.gallery.snapshot()
    plain = rec.embed(list(crops))
    at_size = np.stack([resize_square(c, rec.size) for c in crops])  # the recognizer zooms its input crops
    turns = rec.embed(list(quarter_turns(at_size, rec.second_look_zoom))).reshape(3, 4, -1)
    looked = plain + turns.sum(axis=0)
    looked /= np.linalg.norm(looked, axis=1, keepdims=True)
    rec.second_look_below = 0.0
    dets = _read(rec, crops)
    assert rec.second_looks == 0
    assert [d.similarity for d in dets] == pytest.approx(
        [float((plain[i] @ protos.T)[labels.index(d.label)]) for i, d in enumerate(dets)], abs=2e-4)
    rec.second_look_below = 9.0  # every cell
    dets = _read(rec, crops)
    assert rec.second_looks == 4
    assert [d.similarity for d in dets] == pytest.approx(
        [float((looked[i] @ protos.T)[labels.index(d.label)]) for i, d in enumerate(dets)], abs=2e-4)


def test_doubt_holds_on_held_out_designs_of_the_training_generator(designs: np.ndarray) -> None:
    """Before issue 13's calibration the similarity gate doubted ~96 % of right reads of new
    products; now wrong reads are still almost never trusted while most right ones are."""
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    for k in range(len(designs)):
        rec.enroll(f"d{k}", list(designs[k, :3]))
    ok, doubted = [], []
    for k in range(len(designs)):
        for det in _read(rec, designs[k, 3:]):
            ok.append(det.label == f"d{k}")
            doubted.append(is_doubtful(det, rec.min_quality, rec.min_margin, rec.min_pair_z))
    ok_a, doubt_a = np.array(ok), np.array(doubted)
    assert ok_a.mean() > 0.75
    assert np.sum(~ok_a & ~doubt_a) <= 2  # of 240 reads
    assert np.sum(ok_a & doubt_a) / ok_a.sum() < 0.8


def test_runtime_preprocessing_is_the_training_one() -> None:
    """BGR order, (x - 127.5) / 127.5 (training's `to_input`: x / 127.5 - 1), centred square crop with
    INTER_AREA (the dataset's crop): a mismatch here would be a silent loss."""
    card = json.loads((DEFAULT_MODEL_DIR / "model_card.json").read_text(encoding="utf-8"))
    assert card["input"]["order"] == "BGR" and card["input"]["layout"] == "NCHW"
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (5, 64, 64, 3), np.uint8)
    x = to_tensor(crops, card["normalization"])
    want = crops.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    assert x.shape == (5, 3, 64, 64) and np.allclose(x, want, atol=1e-5)
    assert np.allclose(x[:, 0], crops[..., 0] / 127.5 - 1, atol=1e-5)  # channel 0 is blue, not swapped
    frame = rng.integers(0, 256, (120, 200, 3), np.uint8)
    roi = CellRoi("A", 0, 30, 10, 100, 90)  # wider than tall: the centred 90 x 90 square
    (cell,) = crop_cells(frame, [roi], 64)
    assert np.array_equal(cell, cv2.resize(frame[10:100, 35:125], (64, 64), interpolation=cv2.INTER_AREA))
    assert np.array_equal(cell, resize_square(frame[10:100, 30:130], 64))  # enrollment frames it alike


def test_training_views_above_camera_resolution_are_camera_views_upscaled() -> None:
    """A 96 px model trains on what the recognizer gives it at runtime: a camera-sized cell (64 px
    here) resized with INTER_AREA, not finer print; at 64 px the views are those of before."""
    from vision_models.train.randomized import CAMERA_PX

    small, y, partner = generate(4, 3, CAMERA_PX, SEED, clean_views=1)
    big, y96, partner96 = generate(4, 3, 96, SEED, clean_views=1)
    assert big.shape == (12, 96, 96, 3) and np.array_equal(y, y96) and np.array_equal(partner, partner96)
    assert np.array_equal(big, np.stack([resize_square(v, 96) for v in small]))


def test_held_out_check_of_the_training_generator_reads_enrolled_designs() -> None:
    from vision_models.train.heldout import check

    got = check(DEFAULT_MODEL_DIR, classes=6, tests=4)
    assert got["reads"] == 24 and got["input_px"] == Recognizer.load(DEFAULT_MODEL_DIR).size
    assert got["top1_plain"] >= 0.5 and got["top1_second_look_all"] >= 0.5
    assert 0 <= got["wrong_trusted_rate"] <= 1 - got["top1"] + 1e-9


def test_quality_is_the_spread_ratio_against_the_cards_limit_and_other_packages_fall_below(designs: np.ndarray) -> None:
    """Cards since 2.5.0: a read as close to its product's enrollment views as they are to themselves
    has quality 1, one at `max_spread_ratio` has `min_quality`; views of a product nobody enrolled,
    read as the nearest enrolled one, lie far beyond its spread (the open-set check)."""
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    assert rec.max_spread_ratio is not None and rec.max_spread_ratio > 1
    rec.radius_slack = None
    for k in range(4):
        rec.enroll(f"design_{k}", list(designs[k, :3]))
    own = [d for d in _read(rec, designs[0, 3:]) if d.label == "design_0"]
    assert own and all(d.spread_ratio >= 0 for d in own)
    for det in own:
        judged = det.spread_ratio * np.exp(-rec.ratio_margin_gain * max(det.margin, 0))  # the card's discount
        want = 1 - (1 - rec.min_quality) * max(judged - 1, 0) / (rec.max_spread_ratio - 1)
        assert det.quality == pytest.approx(min(1.0, max(0.0, want)), abs=2e-3)
    clean = _read(rec, designs[0, :3])  # the reference shots themselves
    assert all(d.label == "design_0" and d.spread_ratio < rec.max_spread_ratio for d in clean)
    strangers = [d for d in _read(rec, designs[5:, 3:].reshape(-1, *designs.shape[2:]))
                 if d.label.startswith("design_")]
    assert strangers and np.median([d.spread_ratio for d in strangers]) > 2 * np.median([d.spread_ratio for d in own])
    seed = [d for d in _read(rec, designs[0, 3:]) if not d.label.startswith("design_") and d.label != EMPTY]
    assert all(d.spread_ratio == -1 and d.quality == d.similarity for d in seed)  # no spread: similarity


def test_a_clear_margin_lets_a_read_lie_further_from_its_views_by_the_cards_gain(designs: np.ndarray) -> None:
    """With `ratio_margin_gain` the open-set check judges spread ratio x exp(-gain x margin) (a ratio
    test: a read far nearer its label than any other product may lie further from the label's own
    views); the label, margin and spread ratio stay as they were, only the quality moves."""
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    assert rec.max_spread_ratio is not None
    for k in range(4):
        rec.enroll(f"design_{k}", list(designs[k, :3]))
    shots = designs[:6, 3:].reshape(-1, *designs.shape[2:])  # 4 enrolled designs and 2 strangers
    rec.ratio_margin_gain = 0.0
    plain = _read(rec, shots)
    rec.ratio_margin_gain = 4.0
    gained = _read(rec, shots)
    assert [(d.label, d.margin, d.spread_ratio) for d in gained] == [(d.label, d.margin, d.spread_ratio) for d in plain]
    measured = [(a, b) for a, b in zip(plain, gained, strict=True) if a.spread_ratio > 0]
    assert len(measured) >= 30
    for a, b in measured:
        judged = a.spread_ratio * np.exp(-4.0 * max(a.margin, 0))
        want = 1 - (1 - rec.min_quality) * max(judged - 1, 0) / (rec.max_spread_ratio - 1)
        assert b.quality == pytest.approx(min(1.0, max(0.0, want)), abs=2e-3)
        assert b.quality >= a.quality
    assert any(b.quality > a.quality + 0.01 for a, b in measured)  # some reads gained


def test_the_lead_adds_the_runner_ups_spread_ratio_over_the_labels_by_the_cards_weight(designs: np.ndarray) -> None:
    """A read's lead is its margin plus `ratio_weight` x log(runner-up's spread ratio / the label's):
    a read of an enrolled design lies much nearer its own views than the runner-up's, so its lead
    exceeds its margin; with weight 0 (cards before it) the lead is the margin; a runner-up without a
    spread (the seed labels) adds nothing."""
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    for k in range(4):
        rec.enroll(f"design_{k}", list(designs[k, :3]))
    rec.ratio_weight = 0.0
    shots = designs[:4, 3:].reshape(-1, *designs.shape[2:])  # 10 unseen views of each of the 4
    plain = _read(rec, shots)
    assert all(d.lead == d.margin and d.runner_up_ratio == -1 for d in plain)  # not even measured
    rec.ratio_weight = 0.1
    dets = _read(rec, shots)
    assert [d.margin for d in dets] == [d.margin for d in plain]  # the weight changes the lead only
    # among the enrolled designs only (as a planogram's candidates), every runner-up has a spread
    enrolled = _read(rec, shots, [f"design_{k}" for k in range(4)])
    both = [d for d in enrolled if d.spread_ratio > 0 and d.runner_up_ratio > 0]
    assert len(both) >= 30
    for d in both:
        want = d.margin + 0.1 * np.clip(np.log(d.runner_up_ratio / d.spread_ratio), -3, 3)
        assert d.lead == pytest.approx(want, abs=2e-3)
    right = [d for d, truth in zip(enrolled, np.repeat(np.arange(4), 10), strict=True) if d.label == f"design_{truth}"]
    assert np.median([d.lead - d.margin for d in right if d in both]) > 0  # own views are nearer
    seed_runner_up = [d for d in dets if d.runner_up_ratio == -1]
    assert all(d.lead == d.margin for d in seed_runner_up)

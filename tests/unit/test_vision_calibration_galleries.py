"""Doubt calibration (vision_models/train/calibrate_doubt.py): calibration and the held-out check
read each design against one machine-size gallery (`gallery_groups`, `read_in_galleries`), not
against every design drawn; the open-set check's margin gain is chosen on the reads (`choose_gates`)."""

from __future__ import annotations

import numpy as np
import pytest

from vision_models import DEFAULT_MODEL_DIR, Recognizer
from vision_models.train.calibrate_doubt import (
    Reads,
    calibration_reads,
    choose_gates,
    discounted,
    gallery_groups,
    pooled,
    read_in_galleries,
    z_bar,
)
from vision_models.train.heldout import check
from vision_models.train.randomized import CAMERA_PX, generate


def test_twins_share_a_gallery_and_galleries_get_even_shares() -> None:
    partner = np.full(20, -1)
    for a, b in ((0, 1), (4, 9), (12, 13), (17, 18)):
        partner[a], partner[b] = b, a
    group = gallery_groups(partner, enrolled=16, size=6)
    assert set(group.tolist()) == {0, 1, 2}  # ceil(16 / 6) galleries
    for a, b in ((0, 1), (4, 9), (12, 13), (17, 18)):
        assert group[a] == group[b]
    sizes = np.bincount(group)
    assert sizes.max() - sizes.min() <= 2  # a pair is dealt as one: never more than one pair apart
    pairs = np.bincount(group[partner >= 0], minlength=3) // 2
    assert pairs.max() - pairs.min() <= 1
    assert np.array_equal(gallery_groups(partner, enrolled=16, size=100), np.zeros(20, np.int64))


def test_each_gallery_is_read_on_its_own_and_the_recognizers_gallery_is_kept() -> None:
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    seed = rec.gallery
    refs, tests = 3, 2
    x, _, _ = generate(4, refs + tests, CAMERA_PX, 99, clean_views=refs)
    views = x.reshape(4, refs + tests, *x.shape[1:])
    names = [f"design_{k}" for k in range(4)]
    group = np.array([0, 0, 1, 1])
    plain, looked = read_in_galleries(rec, views, refs, 3, group, names, (0.0, 9.0))
    assert rec.gallery is seed and not any(n in rec.labels for n in names)
    assert len(plain) == len(looked) == 4 * tests
    labels = [d.label for d in plain]
    by_design = [labels[k * tests:(k + 1) * tests] for k in range(4)]
    # design_3 was never enrolled; designs 0 and 1 never met design 2 (another gallery)
    assert "design_3" not in labels
    assert not {"design_2"} & set(by_design[0] + by_design[1])
    assert not {"design_0", "design_1"} & set(by_design[2] + by_design[3])
    # reads come back in design order: most of each enrolled design's reads carry its own name
    right = sum(lab == names[k] for k in range(3) for lab in by_design[k])
    assert right >= 5


def _synthetic_reads(rng: np.random.Generator) -> Reads:
    """300 right reads of enrolled designs, some far from their views but all with a clear margin;
    60 reads of never-enrolled designs, read as an enrolled one, far from its views and with almost
    no margin (as near the runner-up as the label): what the margin gain in the open-set check is for."""
    right, strangers = 300, 60
    names = np.array([f"calib_{k}" for k in range(right + strangers)])
    label = np.concatenate([names[:right], names[:strangers]])
    cols = {"label": label, "sim": np.full(right + strangers, 0.9),
            "margin": np.concatenate([rng.uniform(0.2, 0.6, right), rng.uniform(0.0, 0.1, strangers)]),
            "z": np.zeros(right + strangers), "rival": np.zeros(right + strangers),
            "ratio": np.concatenate([rng.uniform(1.0, 10.0, right), rng.uniform(6.0, 12.0, strangers)])}
    return Reads(cols, dict(cols), names, np.arange(right + strangers) < right)


def test_the_pair_checks_bar_is_the_lowest_that_keeps_the_wrong_reads_within_the_spare_budget() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        wrong = np.round(rng.uniform(0, 11.5, int(rng.integers(0, 12))), int(rng.integers(1, 4)))
        spare = int(rng.integers(0, 5))
        bar = z_bar(wrong, spare)
        assert np.sum(wrong >= bar) <= spare and bar >= 0.5
        assert bar == 0.5 or np.sum(wrong >= round(bar - 0.1, 2)) > spare  # one step lower lets one more in
    assert z_bar(np.array([3.0, 1.0]), 2) == 0.5
    assert z_bar(np.array([5.5, 2.0]), 0) == 5.6 and z_bar(np.array([5.5, 2.0]), 1) == 2.1
    # a wrong read far out raises the bar above it; it no longer switches the check off
    assert z_bar(np.array([23.42, 4.0]), 0) == 23.5 and z_bar(np.array([23.42, 4.0]), 1) == 4.1


def test_calibration_withholds_the_pair_checks_verdict_from_pairs_it_cannot_separate() -> None:
    """2,000 reads of 100 twin designs, all with a low margin (the pair check decides): 80 designs of pairs
    the check separates well (right reads far out, wrong ones near 0), 20 of pairs it cannot (separation
    2.5, a mark too small to read: right and wrong reads alike spread to |z| 4). Without a floor the bar
    must rise above the unreadable pairs' wrong reads; with one, their reads get no verdict and the
    bar falls to where the readable pairs' wrong reads end."""
    rng = np.random.default_rng(5)
    designs, per = 100, 20
    names = np.array([f"calib_{k}" for k in range(designs)])
    truth = np.repeat(names, per)
    unreadable = np.repeat(np.arange(designs) >= 80, per)
    wrong = np.where(unreadable, rng.random(truth.size) < 0.3, rng.random(truth.size) < 0.02)
    other = np.repeat(names[np.arange(designs) ^ 1], per)  # the twin
    z = np.where(unreadable, rng.uniform(0, 4, truth.size), np.where(wrong, rng.uniform(0, 2.5, truth.size),
                                                                      rng.uniform(2, 9, truth.size)))
    cols = {"label": np.where(wrong, other, truth), "sim": np.full(truth.size, 0.9),
            "margin": rng.uniform(0, 0.1, truth.size), "z": z, "rival": np.zeros(truth.size),
            "ratio": rng.uniform(1, 3, truth.size), "sep": np.where(unreadable, 2.5, 6.0)}
    reads = Reads(cols, dict(cols), truth, np.ones(truth.size, bool))
    kw = {"min_quality": 0.85, "target": 0.001, "unknown_target": 0.01, "pair_check": True, "max_second_look": 1.0}
    floored = choose_gates(reads, separations=(0.0, 2.0, 2.5, 3.0, 3.5, 4.0), **kw)
    assert 2.5 < floored["min_pair_separation"] <= 6.0 and floored["min_pair_z"] <= 2.6
    assert floored["calibration"]["wrong_trusted_rate"] <= 0.001
    plain = choose_gates(reads, **kw)  # the default: no floor searched
    assert plain["min_pair_separation"] == 0.0 and plain["min_pair_z"] > 3.5
    assert plain["calibration"]["wrong_trusted_rate"] <= 0.001
    assert floored["calibration"]["doubted_correct_rate"] < plain["calibration"]["doubted_correct_rate"] - 0.1


def test_the_pair_checks_bar_is_set_by_the_wrong_reads_it_would_judge_not_by_those_it_never_sees() -> None:
    """1,000 twin reads with a low margin (the pair check decides: right ones at |z| 6-9, 2 % wrong ones
    below 2) and 1,000 clear reads (margin 0.5) of which 5 % are wrong with a runner-up whose own views
    lie much nearer (rival log ratio -3): a ratio weight pulls their lead under the margin, so they are
    doubted without a second look, and at runtime get no verdict. Their second-look |z| (20, what a
    second look would have said) must not set the bar the twins' right reads are trusted by."""
    rng = np.random.default_rng(8)
    n = 1000
    names = np.array([f"calib_{k}" for k in range(2 * n)])
    truth = names
    wrong = np.concatenate([rng.random(n) < 0.02, rng.random(n) < 0.05])
    other = names[np.arange(2 * n) ^ 1]
    clear = np.arange(2 * n) >= n
    z = np.where(clear, np.where(wrong, 20.0, 9.0), np.where(wrong, rng.uniform(0, 2, 2 * n), rng.uniform(6, 9, 2 * n)))
    cols = {"label": np.where(wrong, other, truth), "sim": np.full(2 * n, 0.9),
            "margin": np.where(clear, 0.5, rng.uniform(0, 0.1, 2 * n)), "z": z,
            "rival": np.where(clear & wrong, -3.0, np.where(clear, 1.0, 0.0)),
            "ratio": np.full(2 * n, 1.5), "sep": np.full(2 * n, 6.0)}
    reads = Reads(cols, dict(cols), truth, np.ones(2 * n, bool))
    gates = choose_gates(reads, min_quality=0.85, target=0.001, unknown_target=0.01, pair_check=True,
                         max_second_look=1.0)
    assert gates["ratio_weight"] > 0 and gates["min_margin"] <= 0.5
    assert gates["min_pair_z"] <= 2.1  # the twins' wrong reads end below 2
    assert gates["calibration"]["wrong_trusted_rate"] <= 0.001
    assert gates["calibration"]["doubted_correct_rate"] < 0.01


def test_calibration_keeps_the_margin_gain_that_lets_far_right_reads_through_and_strangers_not() -> None:
    reads = _synthetic_reads(np.random.default_rng(3))
    kw = {"min_quality": 0.85, "target": 0.001, "unknown_target": 0.01, "pair_check": True, "max_second_look": 0.5}
    plain = choose_gates(reads, **kw)  # the default: gain 0 alone
    best = choose_gates(reads, gains=(0.0, 1.0, 2.0, 4.0, 8.0), **kw)
    assert plain["ratio_margin_gain"] == 0.0 and plain["calibration"]["doubted_correct_rate"] > 0.3
    assert best["ratio_margin_gain"] > 0
    assert best["calibration"]["doubted_correct_rate"] <= 0.1
    assert best["calibration"]["unknown_trusted_rate"] <= 0.01
    # what the gate judges at runtime (`Recognizer.recognize`): the ratio x exp(-gain x margin)
    d = discounted(reads, 2.0)
    assert np.allclose(d.first["ratio"], reads.first["ratio"] * np.exp(-2.0 * reads.first["margin"]))
    unmeasured = reads._replace(first={**reads.first, "ratio": np.full(360, -1.0)})
    assert (discounted(unmeasured, 2.0).first["ratio"] == -1).all()  # no spread: nothing to discount


def test_calibration_and_heldout_draw_in_the_style_asked_for() -> None:
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    flat = calibration_reads(rec, classes=2, unknown=1, tests=2, style="flat")
    broad = calibration_reads(rec, classes=2, unknown=1, tests=2, style="broad")
    assert len(flat.truth) == len(broad.truth) == 6 and flat.known.sum() == broad.known.sum() == 4
    assert not np.allclose(flat.first["sim"], broad.first["sim"])  # other pictures, other reads
    out = check(DEFAULT_MODEL_DIR, classes=2, tests=2, style="broad")
    assert out["style"] == "broad" and out["reads"] == 4
    with pytest.raises(ValueError, match="style"):
        calibration_reads(rec, classes=2, unknown=1, tests=2, style="glossy")


def test_draws_are_other_designs_and_pool_into_one_set_of_reads() -> None:
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    first = calibration_reads(rec, classes=2, unknown=1, tests=2)
    second = calibration_reads(rec, classes=2, unknown=1, tests=2, draw=1)
    assert set(first.truth) == {"calib_0", "calib_1", "calib_2"}
    assert set(second.truth) == {"calib1_0", "calib1_1", "calib1_2"}  # never taken for the first draw's
    assert not np.allclose(first.first["sim"], second.first["sim"])
    both = pooled([first, second])
    assert len(both.truth) == 12 and both.known.sum() == 8
    assert set(both.first) == set(first.first) and len(both.again["margin"]) == 12
    assert np.array_equal(both.first["label"][6:], second.first["label"])


def test_withheld_twins_go_last_and_keep_their_sibling() -> None:
    from vision_models.train.heldout import withhold_twins

    partner = np.array([1, 0, 3, 2, 5, 4, -1, -1])
    order, moved = withhold_twins(partner, 2)
    assert order.tolist() == [0, 2, 4, 5, 6, 7, 1, 3]  # the second twins of the first two pairs last
    for i, k in enumerate(order):  # every partner still points at the same design, in the new order
        assert (moved[i] < 0) == (partner[k] < 0)
        if moved[i] >= 0:
            assert order[moved[i]] == partner[k]
    group = gallery_groups(moved, enrolled=6, size=3)
    assert group[6] == group[0] and group[7] == group[1]  # each withheld twin reads in its sibling's gallery
    with pytest.raises(ValueError, match="pairs"):
        withhold_twins(partner, 4)


def test_an_unenrolled_twin_is_reported_against_its_sibling() -> None:
    from vision_models.train.heldout import unenrolled_twins

    out = unenrolled_twins(DEFAULT_MODEL_DIR, classes=8, pairs=2, tests=3, gallery_size=8)
    assert out["reads"] == 6 and out["unenrolled_twins"] == 2
    assert out["read_as_sibling"] > 0.5  # a product one mark from an enrolled one looks like it
    assert 0 <= out["trusted_as_sibling"] <= out["read_as_sibling"] <= 1
    assert out["trusted_as_sibling"] <= out["trusted_as_any"] <= 1

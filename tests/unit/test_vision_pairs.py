"""The pair check between the two nearest products (vision_models/pairs.py): its statistics, its
decision, how the gallery keeps it, and what it does inside the recognizer on look-alike twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vision_models import DEFAULT_MODEL_DIR, CellRoi, Recognizer
from vision_models.enroll import Gallery
from vision_models.gallery import GalleryStore
from vision_models.pairs import (
    DISTANCE_RIDGE,
    RANK,
    directions,
    pair_verdict,
    pair_z,
    quantized,
    separation,
    spread_distance,
    spread_stats,
)
from vision_models.train.randomized import CAMERA_PX, generate
from vision_models.types import ModelError

DIM = 16


def twins(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two products whose means differ along axis 0 by 0.3, while both vary a lot (sd 1) along the
    direction (0.6, 0.8, 0, ...), which overlaps the difference, and little (sd 0.05) elsewhere."""
    nuisance = np.zeros(DIM)
    nuisance[:2] = (0.6, 0.8)
    base = rng.normal(0, 0.05, (2, n, DIM)) + rng.normal(0, 1.0, (2, n, 1)) * nuisance
    base[0, :, 0] += 0.3
    return base[0], base[1], nuisance


def test_spread_stats_approximate_the_covariance_in_int8_directions() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(0, 1, (20, DIM)) @ rng.normal(0, 0.2, (DIM, DIM))
    stats = spread_stats(e)
    mean, spread, scale, step = stats
    assert mean.dtype == np.float32 and spread.dtype == np.int8 and spread.shape == (RANK, DIM)
    assert step is not None and step.shape == (RANK,) and np.all(step > 0)
    assert scale == pytest.approx(float(np.median(spread_distance(stats, e))))
    u = directions(stats)
    assert np.allclose(u.T @ u, np.cov(e.T), atol=0.01 * np.abs(np.cov(e.T)).max())  # int8: ~0.4 % a row
    assert np.allclose(mean, e.mean(axis=0), atol=1e-6)
    single_mean, single, no_scale, _ = spread_stats(e[:1])  # one embedding: no spread, still a mean
    assert not single.any() and np.allclose(single_mean, e[0]) and np.isnan(no_scale)


def test_int8_directions_keep_each_row_within_half_a_step_and_distances_within_a_percent() -> None:
    """A gallery keeps 41 KB a product (1280 features x 32 directions) instead of float16's 82 KB."""
    rng = np.random.default_rng(7)
    e = rng.normal(0, 1, (96, 300)) * rng.uniform(0.05, 1, 300)
    exact = spread_stats(e)
    floating = (exact.mean, directions(exact).astype(np.float16), exact.scale)  # as galleries before 2.5.1
    q = quantized(floating)
    assert q.dirs.dtype == np.int8 and q.dirs.nbytes == RANK * 300 and np.abs(q.dirs).max() == 127
    err = np.abs(directions(q) - floating[1].astype(np.float64))
    assert np.all(err <= q.step[:, None] / 2 + 1e-6)
    x = rng.normal(0, 1, (50, 300)) * rng.uniform(0.05, 1, 300)
    assert np.allclose(spread_distance(q, x), spread_distance(floating, x), rtol=0.01)
    assert quantized(q) is not q and np.array_equal(quantized(q).dirs, q.dirs)  # already int8: kept
    with pytest.raises(ValueError):  # int8 without the steps would be read as steps of 1
        quantized((q.mean, q.dirs))
    with pytest.raises(ValueError):
        spread_stats(np.zeros((0, DIM)))


def test_the_discriminant_tells_twins_apart_where_the_nearer_mean_does_not() -> None:
    rng = np.random.default_rng(1)
    a, b, _ = twins(rng, 200)
    sa, sb = spread_stats(a), spread_stats(b)
    qa, qb, _ = twins(np.random.default_rng(2), 300)
    z_a = np.array([pair_z(sa, sb, x, shrink=0.01) for x in qa])
    z_b = np.array([pair_z(sa, sb, x, shrink=0.01) for x in qb])
    pair_right = (np.mean(z_a > 0) + np.mean(z_b < 0)) / 2
    ma, mb = a.mean(axis=0), b.mean(axis=0)

    def nearer_a(x: np.ndarray) -> bool:
        return bool(np.linalg.norm(x - ma) < np.linalg.norm(x - mb))

    plain_right = (np.mean([nearer_a(x) for x in qa]) + np.mean([not nearer_a(x) for x in qb])) / 2
    assert pair_right > 0.97 and plain_right < 0.75
    assert np.median(np.abs(z_a)) > 1.5  # ~2.4 expected: half of 0.3 x 0.8 (off the nuisance), over sd 0.05
    assert abs(pair_z(sa, sb, (ma + mb) / 2, shrink=0.01)) < 1e-6  # halfway: no preference
    assert pair_z(sa, sb, ma, shrink=0.01) == pytest.approx(-pair_z(sb, sa, ma, shrink=0.01))
    flat = (sa[0], np.zeros_like(sa[1])), (sb[0], np.zeros_like(sb[1]))  # e.g. a doctored gallery file
    assert pair_z(*flat, ma, shrink=0.01) == 0.0  # no spread, no verdict (not an enormous |z|)
    assert pair_verdict(*flat, ma, shrink=0.01) == (0.0, 0.0)
    # one solve gives both: the read's z and how far apart the pair lies (|z| of either mean)
    z, apart = pair_verdict(sa, sb, qa[0], shrink=0.01)
    assert z == pair_z(sa, sb, qa[0], shrink=0.01) and apart == separation(sa, sb, shrink=0.01)
    assert apart == pytest.approx(abs(pair_z(sa, sb, sb[0], shrink=0.01)), rel=1e-9) and apart > 1.5


def test_the_low_rank_solution_is_the_ridge_discriminant_in_any_dimension() -> None:
    """pair_z solves in the span of the two spreads; it must equal the plain D x D ridge solution."""
    rng = np.random.default_rng(4)
    for dim in (DIM, 300):
        a, b = (spread_stats(rng.normal(0, 1, (40, dim)) * rng.uniform(0.1, 1, dim) + rng.normal(0, 0.3, dim))
                for _ in range(2))
        x = rng.normal(0, 0.5, dim)
        fa, fb = (directions(s) for s in (a, b))
        within = fa.T @ fa + fb.T @ fb
        w = np.linalg.solve(within + 3.0 * np.trace(within) / dim * np.eye(dim), a[0] - b[0].astype(np.float64))
        want = w @ (x - 0.5 * (a[0] + b[0].astype(np.float64))) / np.sqrt(0.5 * w @ within @ w)
        assert pair_z(a, b, x, shrink=3.0) == pytest.approx(want, rel=1e-6)


def test_the_spread_distance_is_a_ridge_mahalanobis_and_tells_own_views_from_others() -> None:
    rng = np.random.default_rng(5)
    a, _, _ = twins(rng, 200)
    sa = spread_stats(a)
    qa, _, _ = twins(np.random.default_rng(6), 100)
    qb = qa.copy()
    qb[:, 5] += 1.5  # another package: off along a direction in which a's own views hardly vary
    u = directions(sa)
    cov = u.T @ u
    inv = np.linalg.inv(cov + DISTANCE_RIDGE * np.trace(cov) / DIM * np.eye(DIM))
    r = qb[:5] - sa.mean
    assert np.allclose(spread_distance(sa, qb[:5]), np.einsum("ij,jk,ik->i", r, inv, r) / DIM, rtol=1e-6)
    own, other = spread_distance(sa, qa) / sa.scale, spread_distance(sa, qb) / sa.scale
    assert 0.5 < np.median(own) < 2 and np.min(other) > np.percentile(own, 99)
    flat = (sa.mean, np.zeros_like(sa.dirs))
    assert np.isnan(spread_distance(flat, qa[:3])).all()  # no spread, no distance


def test_the_gallery_keeps_spreads_with_their_labels_and_old_files_load_without(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    protos = np.eye(DIM, dtype=np.float32)[:3]
    g = Gallery(["a", "b", "c"], protos, np.array([0.9, 0.8, np.nan], np.float32))
    g.put("a", protos[0], 0.9, spread_stats(rng.normal(0, 1, (40, DIM))))
    g.put("b", protos[1], 0.8, spread_stats(rng.normal(0, 1, (40, DIM))))
    g.save(tmp_path / "g.npz")
    back = Gallery.load(tmp_path / "g.npz")
    for label in "ab":
        got, want = back.spread(label), g.spread(label)
        assert got is not None and want is not None
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        assert got.scale == pytest.approx(want.scale) and got.scale > 0
    assert back.spread("c") is None
    back.put("a", protos[0], 0.9)  # new references without a spread: the old one must not stay
    assert back.spread("a") is None
    assert back.remove("b") and back.spread("b") is None and back.copy().spread("b") is None
    old = tmp_path / "old.npz"
    np.savez(old, labels=np.array(["a"]), prototypes=protos[:1])
    assert Gallery.load(old).spread("a") is None
    arrays = g.arrays()
    assert arrays["spread_dirs"].dtype == np.int8 and arrays["spread_step"].shape == (2, RANK)
    steps = arrays.pop("spread_step")
    np.savez(old, **arrays)  # int8 directions without their steps: not a file anyone wrote
    with pytest.raises(ModelError):
        Gallery.load(old)
    arrays["spread_dirs"] = (arrays["spread_dirs"] * steps[..., None]).astype(np.float16)  # as 2.5.0 wrote them
    del arrays["spread_scale"]  # a file from 2.4.0: spreads without their scale
    np.savez(old, **arrays)
    kept, want = Gallery.load(old).spread("a"), g.spread("a")
    assert kept is not None and want is not None and np.isnan(kept.scale)
    assert kept.dirs.dtype == np.int8 and np.allclose(directions(kept), directions(want), atol=float(want.step.max()))
    arrays["spread_scale"] = np.array([np.inf, 0.5], np.float32)  # a doctored file: every read "close"
    np.savez(tmp_path / "doctored.npz", **arrays)
    with pytest.raises(ModelError):
        Gallery.load(tmp_path / "doctored.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, labels=np.array(["a"]), prototypes=protos[:1], spread_labels=np.array(["a", "zz"]),
             spread_mean=np.zeros((1, DIM), np.float32), spread_dirs=np.zeros((1, RANK, DIM), np.float16))
    with pytest.raises(ModelError):
        Gallery.load(bad)
    with pytest.raises(ValueError):
        g.put("a", protos[0], 0.9, (np.full(DIM, np.nan, np.float32), np.zeros((RANK, DIM), np.float16)))
    # spreads live in the model's pair features, which may be wider than the prototypes, but one width
    wide = Gallery(["a", "b"], protos[:2], spreads={"a": spread_stats(rng.normal(0, 1, (9, 3 * DIM)))})
    with pytest.raises(ValueError):
        wide.put("b", protos[1], 0.9, spread_stats(rng.normal(0, 1, (9, DIM))))
    wide.put("a", protos[0], 0.9, spread_stats(rng.normal(0, 1, (9, DIM))))  # replacing the only one: fine
    with pytest.raises(ModelError):
        Gallery(["a", "b"], protos[:2], spreads={"a": spread_stats(rng.normal(0, 1, (9, 3 * DIM))),
                                                 "b": spread_stats(rng.normal(0, 1, (9, DIM)))})


def test_an_enrolled_product_gets_a_spread_that_survives_the_state_directory(tmp_path: Path) -> None:
    seed = DEFAULT_MODEL_DIR / "gallery.npz"
    store = GalleryStore(tmp_path, seed=seed)
    gallery, _ = store.load()
    rec = Recognizer.load(DEFAULT_MODEL_DIR, gallery=gallery)
    x, _, _ = generate(1, 3, CAMERA_PX, 5, clean_views=3)
    rec.enroll("kombucha", list(x))
    store.save(rec.gallery)
    spread = store.load()[0].spread("kombucha")
    # in the model's pair features (the shipped model's pooled backbone channels, not its embedding)
    assert rec.pair_dim == rec.card["onnx"]["pair_features"]["dim"] > rec.gallery.dim  # shelf-v2 since 2.4.0
    assert spread is not None and spread[1].shape == (RANK, rec.pair_dim) and spread[1].any()
    assert rec.gallery.spread("cola") is None  # the shipped seed labels have none: no pair check for them


def test_the_recognizer_lets_the_pair_check_decide_a_close_read_and_reports_how_sure() -> None:
    """Two enrolled products whose prototypes both resemble the read, the first more: with spreads that
    agree, the read stays the first; with spreads that say the second (their means swapped), the label,
    runner-up, scores and margin are swapped together and |z| is reported; a product without a spread,
    a clear margin or a card without the pair check leave the read alone."""
    rec = Recognizer.load(DEFAULT_MODEL_DIR)
    x, _, _ = generate(1, 1, CAMERA_PX, 77, clean_views=0)
    roi = [CellRoi("T", 0, 0, 0, CAMERA_PX, CAMERA_PX)]
    rec.second_look_below, rec.pair_shrink = 9.0, 3.0
    rng = np.random.default_rng(0)

    def nearby(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        near = v + 0.35 * rng.normal(0, 1, v.shape) / np.sqrt(v.size)
        return v / np.linalg.norm(v), (near / np.linalg.norm(near)).astype(np.float32)

    pa, pb = nearby(rec.embed([x[0]])[0])  # prototypes: the read's own, and a close one
    fa, fb = nearby(rec.reference([x[0]]).spread[0])  # spread means, in the model's pair features
    calm = np.zeros((RANK, rec.pair_dim), np.float16)
    calm[0] = 0.01

    def read(spread_a: tuple[np.ndarray, np.ndarray] | None, spread_b: tuple[np.ndarray, np.ndarray] | None):
        rec.gallery.remove("prod_a"), rec.gallery.remove("prod_b")  # a gallery's spreads share one width
        rec.gallery.put("prod_a", pa, 0.9, spread_a)
        rec.gallery.put("prod_b", pb, 0.9, spread_b)
        return rec.recognize(x[0], roi)[0]

    agree = read((fa, calm), (fb, calm))
    assert (agree.label, agree.runner_up) == ("prod_a", "prod_b") and agree.pair_z > 0 and agree.margin > 0
    swapped = read((fb, calm), (fa, calm))
    assert (swapped.label, swapped.runner_up) == ("prod_b", "prod_a")
    assert swapped.pair_z == pytest.approx(agree.pair_z, rel=1e-3) and swapped.margin == pytest.approx(-agree.margin)
    assert swapped.score == pytest.approx(agree.runner_up_score) and swapped.runner_up_score == pytest.approx(agree.score)
    assert read((fb, calm), None).pair_z == 0  # the runner-up has no spread: nothing to check against
    other = np.zeros((RANK, rec.pair_dim + 1), np.float16)  # spreads another model left: not comparable
    assert read((np.append(fb, 0), other), (np.append(fa, 0), other)).pair_z == 0
    apart = separation((fa, calm), (fb, calm), 3.0)
    assert agree.pair_separation == pytest.approx(apart, rel=1e-3) and apart > 0
    rec.min_pair_separation = apart * 1.01  # a pair the check cannot tell apart gets no verdict
    closer = read((fb, calm), (fa, calm))
    assert (closer.label, closer.pair_z) == ("prod_b", 0.0)  # still its better guess, but not sure of it
    assert closer.pair_separation == pytest.approx(apart, rel=1e-3)
    rec.min_pair_separation = apart * 0.99
    assert read((fb, calm), (fa, calm)).pair_z == pytest.approx(agree.pair_z, rel=1e-3)
    rec.second_look_below = 0.0  # no second look, no pair check (the card keeps both at min_margin)
    assert read((fb, calm), (fa, calm)).label == "prod_a"
    rec.second_look_below, rec.pair_shrink = 9.0, None
    assert read((fb, calm), (fa, calm)).label == "prod_a"


def test_calibration_finds_gates_that_keep_its_own_wrong_reads_within_target() -> None:
    from vision_models.train.calibrate_doubt import (
        MAX_SECOND_LOOK,
        PAIR_SHRINK,
        RATIO_MARGIN_GAINS,
        RATIO_WEIGHTS,
        calibrate,
    )

    rec = Recognizer.load(DEFAULT_MODEL_DIR)
    with_pair = calibrate(rec, classes=8, unknown=2, tests=3, target=0.02, unknown_target=0.25)
    cal = with_pair["calibration"]
    assert cal["wrong_trusted_rate"] <= 0.02 and cal["unknown_trusted_rate"] <= 0.25
    assert with_pair["max_spread_ratio"] > 1 and "radius_slack" not in with_pair
    assert with_pair["pair_shrink"] == PAIR_SHRINK and with_pair.get("min_pair_z", 1.0) > 0
    assert with_pair["ratio_margin_gain"] in RATIO_MARGIN_GAINS
    assert with_pair["ratio_weight"] in RATIO_WEIGHTS and with_pair["second_look_zoom"] == rec.second_look_zoom == 1.2
    assert cal["second_look_share"] <= cal["max_second_look"] == MAX_SECOND_LOOK
    rec = Recognizer.load(DEFAULT_MODEL_DIR)
    capped = calibrate(rec, classes=8, unknown=2, tests=3, target=0.02, unknown_target=0.25, max_second_look=0.0)
    assert capped["calibration"]["second_look_share"] == 0.0  # no calibration read gets a second look
    assert capped["calibration"]["wrong_trusted_rate"] <= 0.02  # the margin gate still holds the target
    rec = Recognizer.load(DEFAULT_MODEL_DIR)
    without = calibrate(rec, classes=8, unknown=2, tests=3, target=0.02, unknown_target=0.25, pair_shrink=None)
    assert "min_pair_z" not in without and rec.pair_shrink is None
    assert without["calibration"]["wrong_trusted_rate"] <= 0.02

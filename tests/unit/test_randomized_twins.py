"""The training generator's look-alike twins are two products, not two labels for one picture.

Before, a twin pair could differ by a mark drawn off the package (invisible once the outline masks
it) or in two colours a few RGB steps apart: the same image under two labels, which teaches the
embedding to chase noise. Each pair must now differ visibly, and only inside the package."""

from __future__ import annotations

import numpy as np
import pytest

from vision_models.train.randomized import _design, _draw, _marked, _twin_marks

SEEDS = range(300)


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = _design(int(rng.integers(1 << 40)))
    img, mask = _draw(d, None)
    m1, m2 = _twin_marks(d, mask, rng)
    return _marked(img, m1), _marked(img, m2), mask


@pytest.mark.parametrize("chunk", range(3))
def test_every_twin_pair_differs_visibly_and_only_on_the_package(chunk: int) -> None:
    for seed in list(SEEDS)[chunk::3]:
        a, b, mask = _pair(seed)
        diff = np.abs(a - b).max(axis=2)
        visible = diff > 60  # a clear step in at least one channel
        assert visible.sum() >= 20, f"seed {seed}: twins differ in only {int(visible.sum())} px"
        on_package = mask[visible] > 0.5  # the outline is anti-aliased: its edge pixels count by half
        assert on_package.all(), f"seed {seed}: {int((~on_package).sum())} differing px off the package"


def test_all_five_kinds_of_difference_occur() -> None:
    kinds = set()
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        d = _design(int(rng.integers(1 << 40)))
        m1, m2 = _twin_marks(d, _draw(d, None)[1], rng)
        if m2 is None:
            kinds.add("presence")
        elif m1[3] == "word":
            kinds.add("word")
        elif m1[:2] != m2[:2]:
            kinds.add("place")
        elif m1[3] != m2[3]:
            kinds.add("shape")
        else:
            assert m1[2] != m2[2]
            kinds.add("colour")
    assert kinds == {"presence", "word", "place", "shape", "colour"}


def test_twin_aware_views_differ_in_the_mark_alone_and_say_how_much_of_it_shows() -> None:
    from vision_models.train.randomized import MARK_PIXEL_DIFF, generate, generate_twin_aware

    x, y, partner, visible = generate_twin_aware(24, 6, 64, 17, clean_views=1)
    assert x.shape == (24 * 6, 64, 64, 3) and visible.shape == (24 * 6,)
    assert (partner[:12] == np.arange(12) ^ 1).all() and (partner[12:] == -1).all()
    v = x.reshape(24, 6, 64, 64, 3).astype(np.int16)
    shown = visible.reshape(24, 6)
    assert (shown[12:] == 1).all()  # single designs: sure labels
    assert (shown[:12, 0] == 1).all()  # a pair's clean view is the measure
    assert ((shown >= 0) & (shown <= 1)).all()
    for k in range(0, 12, 2):
        assert (shown[k] == shown[k + 1]).all()  # both twins' views share the nuisance and the figure
        # under one nuisance the twins' views differ in few pixels (the mark), not in pose or light
        differing = (np.abs(v[k] - v[k + 1]).max(axis=3) > MARK_PIXEL_DIFF).mean(axis=(1, 2))
        assert differing.max() < 0.2
    # a hand or glare hides a mark now and then: some views show little of it, most show it
    assert 0 < np.mean(shown[:12, 1:] < 0.5) < 0.5
    # the first twin's views are `generate`'s, pixel for pixel (its twin's then follow its nuisance)
    xs, _, _ = generate(24, 6, 64, 17, clean_views=1)
    assert np.array_equal(xs[:6], x[:6])
    assert not np.array_equal(xs[6:12], x[6:12])

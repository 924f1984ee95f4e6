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

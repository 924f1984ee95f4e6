"""The training generator's broad style (`vision_models.train.styles`): twins still differ only in
their mark, enrollment shots stay clean, the flat style is what it was, bad style names fail."""

from __future__ import annotations

import numpy as np
import pytest

from vision_models.train import styles
from vision_models.train.randomized import _design, _looks, _view, generate


def _diff_share(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32)).max(axis=2) > 30))


@pytest.mark.parametrize("broad", [False, True])
def test_twins_differ_only_in_a_small_visible_mark(broad: bool) -> None:
    shares = []
    for seed in range(40):
        d = _design(1000 + seed)
        (a, alpha), (b, _) = _looks(d, True, broad, np.random.default_rng(seed))
        share = _diff_share(a * alpha[..., None], b * alpha[..., None])
        shares.append(share)
        assert share < 0.08, (seed, share)  # a mark, or one moved mark: not another design
    assert min(shares) > 0.0  # every pair differs visibly on the package


def test_broad_restyles_the_package_and_keeps_it_on_the_canvas() -> None:
    changed = 0
    for seed in range(30):
        d = _design(5000 + seed)
        (flat, _), = _looks(d, False, False, np.random.default_rng(0))
        (broad, alpha), = _looks(d, False, True, np.random.default_rng(0))
        assert 0.1 < float(alpha.mean()) < 0.85  # a package, not a blank or a full canvas
        assert broad.min() >= 0 and broad.max() <= 255
        changed += _diff_share(flat, broad) > 0.02
    assert changed >= 20  # most designs look different in the broad style


def test_enrollment_shots_never_get_the_shelf_scene() -> None:
    d = _design(77)
    (img, alpha), = _looks(d, False, True, np.random.default_rng(1))
    for seed in range(10):
        clean_broad = _view(img, alpha, 64, np.random.default_rng(seed), clean=True, broad=True)
        clean_flat = _view(img, alpha, 64, np.random.default_rng(seed), clean=True, broad=False)
        assert np.array_equal(clean_broad, clean_flat)
    shelf = [_view(img, alpha, 64, np.random.default_rng(s), broad=True) for s in range(10)]
    plain = [_view(img, alpha, 64, np.random.default_rng(s), broad=False) for s in range(10)]
    assert any(not np.array_equal(p, q) for p, q in zip(shelf, plain, strict=True))


def test_shelf_extras_keep_the_canvas_shape_and_type() -> None:
    canvas = np.full((128, 128, 3), 120.0, np.float32)
    for seed in range(20):
        out = styles.shelf_extras(canvas.copy(), np.random.default_rng(seed))
        assert out.shape == canvas.shape and out.dtype == np.float32


def test_flat_is_the_default_and_styles_are_checked() -> None:
    a = generate(6, 2, 64, 3, clean_views=1)
    b = generate(6, 2, 64, 3, clean_views=1, style="flat")
    c = generate(6, 2, 64, 3, clean_views=1, style="broad")
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert np.array_equal(a[2], c[2])  # the same look-alike pairs in every style
    mixed = generate(6, 2, 64, 3, clean_views=1, style="mixed")
    assert mixed[0].shape == a[0].shape
    with pytest.raises(ValueError, match="style"):
        generate(2, 2, 64, 3, style="glossy")

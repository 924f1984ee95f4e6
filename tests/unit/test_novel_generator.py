"""The evaluation-only novel-product generator: deterministic, look-alikes one mark apart, and
never reachable from training code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.novel.generator import draw_design, make_catalogue, render_view

ROOT = Path(__file__).resolve().parents[2]


def test_catalogue_is_deterministic_and_pairs_differ_only_in_a_small_mark() -> None:
    cat = make_catalogue(48, 12, seed=5)
    assert len(cat) == 48 and len({d.sku_id for d in cat}) == 48
    assert [d.sku_id for d in cat] == [d.sku_id for d in make_catalogue(48, 12, seed=5)]
    pairs = [d for d in cat if d.partner]
    assert len(pairs) == 24
    for a in pairs[::2]:
        b = next(d for d in cat if d.sku_id == a.partner)
        ia, _ = draw_design(a)
        ib, _ = draw_design(b)
        differ = np.any(np.abs(ia - ib) > 30, axis=2).mean()
        assert 0.005 < differ < 0.05, differ  # a small mark, not a different product


def test_views_are_cell_sized_images_that_vary() -> None:
    d = make_catalogue(4, 1)[0]
    rng = np.random.default_rng(0)
    a, b = render_view(d, 64, rng, hard=True), render_view(d, 64, rng, hard=True)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_training_code_never_imports_the_novel_generator() -> None:
    offenders = [p for p in (ROOT / "vision_models").rglob("*.py")
                 if "bench.novel" in p.read_text(encoding="utf-8") or "bench/novel" in p.read_text(encoding="utf-8")]
    assert offenders == []

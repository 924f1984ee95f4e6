"""The pooled-feature losses of episodic training (`vision_models.train.pairloss`): the same solve and
z as the daemon's pair check, and losses that fall when views move the way the checks want. Needs
the `train` extra (torch): skipped without."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vision_models.pairs import _ridge_solve, pair_z, spread_stats  # noqa: E402
from vision_models.train.pairloss import compact_loss, ridge_solve, twin_z_loss  # noqa: E402

D, VIEWS = 48, 4


def _episode(rng: np.random.Generator, classes: int, mark: float, noise: float) -> np.ndarray:
    """classes x VIEWS x D: pairs (0, 1), (2, 3) share a design and differ by `mark` along one axis."""
    designs = rng.normal(0, 1, (classes, D))
    for a in range(0, 4, 2):
        designs[a + 1] = designs[a]
        designs[a + 1, a] += mark
    return designs[:, None] + rng.normal(0, noise, (classes, VIEWS, D))


def _partner(classes: int) -> np.ndarray:
    p = np.full(classes, -1)
    p[[0, 1, 2, 3]] = [1, 0, 3, 2]
    return p


def test_the_solve_is_the_pair_checks() -> None:
    rng = np.random.default_rng(1)
    u, v = rng.normal(0, 1, (12, D)), rng.normal(0, 1, (3, D))
    ours = ridge_solve(torch.from_numpy(u), 10.0, torch.from_numpy(v)).numpy()
    theirs = _ridge_solve(u, 10.0, v)
    assert theirs is not None and np.allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def test_twin_z_loss_falls_as_the_mark_grows_and_follows_the_pair_checks_sign() -> None:
    rng = np.random.default_rng(2)
    losses = []
    for mark in (0.3, 1.0, 3.0):
        x = torch.from_numpy(_episode(rng, 8, mark, 0.3).reshape(-1, D))
        losses.append(float(twin_z_loss(x, 8, VIEWS, _partner(8), shrink=1.0, target=4.0)))
    assert losses[0] > losses[1] > losses[2]
    # twins' views swapped: every z has the wrong sign, the loss is far larger
    per = _episode(rng, 8, 3.0, 0.3)
    right = float(twin_z_loss(torch.from_numpy(per.reshape(-1, D)), 8, VIEWS, _partner(8), 1.0, 4.0))
    # where that loss is low, the daemon's pair_z (the products' own spreads) puts every view on its side
    a, b = spread_stats(per[0]), spread_stats(per[1])
    assert all(pair_z(a, b, v, 1.0) > 0 for v in per[0, 1:]) and all(pair_z(a, b, v, 1.0) < 0 for v in per[1, 1:])
    per[[0, 1, 2, 3], 1:] = per[[1, 0, 3, 2], 1:]
    wrong = float(twin_z_loss(torch.from_numpy(per.reshape(-1, D)), 8, VIEWS, _partner(8), 1.0, 4.0))
    assert wrong > right + 3.0


def test_twin_z_loss_is_zero_without_twins_and_has_gradients() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(_episode(rng, 8, 1.0, 0.3).reshape(-1, D)).float().requires_grad_(True)
    assert float(twin_z_loss(x, 8, VIEWS, np.full(8, -1), 10.0, 8.0)) == 0.0
    loss = twin_z_loss(x, 8, VIEWS, _partner(8), 10.0, 8.0)
    loss.backward()
    assert x.grad is not None and float(x.grad[: 4 * VIEWS].abs().sum()) > 0


def test_compact_loss_falls_when_shelf_views_stay_near_their_clean_view() -> None:
    rng = np.random.default_rng(4)
    per = _episode(rng, 8, 1.0, 0.3)
    before = float(compact_loss(torch.from_numpy(per.reshape(-1, D)), 8, VIEWS))
    per[:, 1:] = per[:, :1] + 0.3 * (per[:, 1:] - per[:, :1])  # views pulled towards their clean view
    after = float(compact_loss(torch.from_numpy(per.reshape(-1, D)), 8, VIEWS))
    assert after < before - 0.5


def test_a_view_hiding_its_mark_is_held_near_z_zero_not_pushed_past_the_target() -> None:
    rng = np.random.default_rng(5)
    per = _episode(rng, 8, 3.0, 0.3)  # the mark shows plainly in the features: |z| well past 4
    x = torch.from_numpy(per.reshape(-1, D))
    seen = np.ones((8, VIEWS))
    hidden = seen.copy()
    hidden[:4, 1:] = 0.0  # the twins' shelf views are said to show none of their mark
    sure = float(twin_z_loss(x, 8, VIEWS, _partner(8), 1.0, 4.0, seen))
    assert np.isclose(sure, float(twin_z_loss(x, 8, VIEWS, _partner(8), 1.0, 4.0)))  # all shown: as without
    assert float(twin_z_loss(x, 8, VIEWS, _partner(8), 1.0, 4.0, hidden)) > sure + 2.0  # a sure |z| is wrong
    for a in (0, 2):  # the hidden views sit half-way between their twins' clean views: z ~ 0
        per[a : a + 2, 1:] = 0.5 * (per[a, 0] + per[a + 1, 0]) + rng.normal(0, 0.05, (2, VIEWS - 1, D))
    x = torch.from_numpy(per.reshape(-1, D))
    assert float(twin_z_loss(x, 8, VIEWS, _partner(8), 1.0, 4.0, hidden)) < 0.2

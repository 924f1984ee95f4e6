"""Losses on the pooled backbone features, the space the daemon's pair and open-set checks work in.

The episode loss (`episodic.episode_loss`) trains the 128-d embedding; the pair check
(`vision_models.pairs.pair_z`) and the open-set check (`pairs.spread_distance`) judge a read in the
backbone's pooled 1280 channels, in units of a product's own spread. Nothing trained those
quantities. Here, per episode (each design: 1 clean view, then shelf views):

- `twin_z_loss`: for each look-alike pair, the pair check's z of each shelf view between the two
  clean views: the discriminant from the batch's within-design scatter (shrunk like the card's
  `pair_shrink`), the unit the two designs' own views' spread along it (as the daemon measures in
  the two products' own enrollment spreads; the batch's scatter there made z ~3x the daemon's); a
  soft hinge pushes every view past `target` on its own side. The quantity the card's `min_pair_z`
  gates, so a twin read trained past it is a read the check settles. With `--twin-aware` views, one
  that hides its mark is held to |z| <= `hidden_z` instead (in proportion to how little it shows).
- `compact_loss`: how far each shelf view lies from its design's clean view in units of that
  scatter (`spread_distance`'s form, ridge `DISTANCE_RIDGE`), against how far the designs lie from
  each other: a hand or glare should move a view less than a different product does.

`ridge_solve` is `pairs._ridge_solve` in torch (Woodbury in the span of the scatter's rows).

Measured, not shipped (docs/vision.md, "Training the pair check's own z"): from 2.7.1 the twin loss
raised the daemon's right-read |z| and cut the share of twin views under the card's bar, but it grew
the tail of wrong reads with a large |z| as well. The calibration then kept no |z| bar, and the
doubt rose. Holding hidden-mark views near 0 (2.12.2) narrowed the loss but did not bring the bar
back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from vision_models.pairs import DISTANCE_RIDGE

SURE_AT = 0.5  # a view showing this share of its twin mark is held to the full z target (episodic.VISIBLE_FULL)


def ridge_solve(u: torch.Tensor, shrink: float, v: torch.Tensor) -> torch.Tensor:
    """(U.T U + r I)^-1 applied to each row of `v` (N x D), r = shrink x tr(U.T U) / D."""
    ridge = shrink * (u * u).sum() / u.shape[1] + 1e-9
    inner = torch.linalg.solve(ridge * torch.eye(len(u), dtype=u.dtype) + u @ u.T, u @ v.T)
    return (v - (u.T @ inner).T) / ridge


def _scatter(per: torch.Tensor) -> torch.Tensor:
    """Rows whose Gram is the within-design covariance of `per` (classes x views x D)."""
    resid = per - per.mean(dim=1, keepdim=True)
    dof = max(per.shape[0] * (per.shape[1] - 1), 1)
    return resid.reshape(-1, per.shape[2]) / float(np.sqrt(dof))


def twin_z_loss(pooled: torch.Tensor, classes: int, views: int, partner: np.ndarray, shrink: float,
                target: float, visible: np.ndarray | None = None, hidden_z: float = 2.0) -> torch.Tensor:
    """Mean softplus(target - z) over the shelf views of every twin pair (see the module doc).

    `visible` (per view, `randomized.generate_twin_aware`): how much of its mark a view shows. A view
    showing less than `SURE_AT` of it is, in that proportion, held to |z| <= `hidden_z` instead: the
    check must not be sure of a read it cannot see (the wrong tail of a loss that only rewards z)."""
    per = pooled.view(classes, views, -1).double()
    u = _scatter(per)
    shown = None if visible is None else np.asarray(visible, np.float64).reshape(classes, views)
    losses = []
    for a in range(classes):
        b = int(partner[a])
        if b <= a:
            continue
        ca, cb = per[a, 0], per[b, 0]
        w = ridge_solve(u, shrink, (ca - cb)[None, :])[0]
        own = torch.cat([per[a] - per[a].mean(0), per[b] - per[b].mean(0)])  # the pair's own scatter
        sd = torch.sqrt(((own @ w) ** 2).sum() / (2 * (views - 1)) + 1e-18)
        mid = 0.5 * (ca + cb)
        z = torch.cat([(per[a, 1:] - mid) @ w / sd, -(per[b, 1:] - mid) @ w / sd])
        if shown is None:
            losses.append(F.softplus(target - z))
            continue
        sure = torch.from_numpy(np.clip(np.concatenate([shown[a, 1:], shown[b, 1:]]) / SURE_AT, 0.0, 1.0))
        losses.append(sure * F.softplus(target - z) + (1 - sure) * F.softplus(z.abs() - hidden_z))
    if not losses:
        return pooled.new_zeros(())
    return torch.cat(losses).mean().float()


def compact_loss(pooled: torch.Tensor, classes: int, views: int) -> torch.Tensor:
    """log(mean distance of shelf views from their clean view / mean distance between clean views),
    both in units of the within-design scatter (see the module doc)."""
    per = pooled.view(classes, views, -1).double()
    u = _scatter(per)
    own = (per[:, 1:] - per[:, :1]).reshape(-1, per.shape[2])
    clean = per[:, 0]
    other = (clean[:, None] - clean[None, :])[~torch.eye(classes, dtype=torch.bool)]
    d = u.shape[1]
    near = (own * ridge_solve(u, DISTANCE_RIDGE, own)).sum(1).mean() / d
    far = (other * ridge_solve(u, DISTANCE_RIDGE, other)).sum(1).mean() / d
    return torch.log(near / far).float()

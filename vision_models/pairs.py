"""The pair check: which of the two nearest products a read is, judged by their references' spread.

Two look-alike products (two flavours of one brand) differ in one small mark; their prototypes are
close, and a plain cosine comparison weighs every direction of the embedding alike, including those
in which a product's own views vary most (pose, light, blur). Each enrolled product therefore keeps
the mean of its enrollment-view embeddings and their main directions of spread (`spread_stats`:
the top `RANK` principal components, scaled by their standard deviations, int8 with one step per
direction: 41 KB a product in 1280 features, half of float16, within 0.4 % of each). A read whose
two nearest products both have them is decided by a shrunk linear discriminant between the two
(`pair_z`): w = (S_a + S_b + shrink * tr/D * I)^-1 (m_a - m_b), and the read's position between the
two means along w in units of the products' own spread along it, z. z > 0: product a; |z| is how
sure (the card's doubt section says from which |z| on a read is trusted: `min_pair_z`).

With a model that exports its pooled backbone features (`vision_models.train.backbones`), the
means, spreads and reads here are those features (1280), not the embedding (128): the projection
keeps less of a twin's one mark. The same spread also gives the open-set check its measure
(`spread_distance`: how far a read lies from a product's views in units of their own spread,
`Recognizer._quality`). Measured before each step was built: docs/vision.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

RANK = 32  # principal directions kept per product: as good as the full covariance (docs/vision.md)
DISTANCE_RIDGE = 0.3  # `spread_distance`'s ridge, x tr/D (fixed: enrolled scales were measured with it)


class Spread(NamedTuple):
    """A product's enrollment views in the model's pair features: their mean, main directions
    (`directions(s).T @ directions(s)` approximates their covariance) and `scale`, the median
    `spread_distance` of the views themselves (NaN: unknown, a gallery written before it existed).
    `dirs` is int8 with `step` per row (`quantized`), or floating with `step` None."""

    mean: np.ndarray  # (D,) float32
    dirs: np.ndarray  # (RANK, D) int8 (x step), or floating
    scale: float = float("nan")
    step: np.ndarray | None = None  # (RANK,) float32: one int8 unit of each row of `dirs`


def directions(spread: Spread | tuple[np.ndarray, ...]) -> np.ndarray:
    """A spread's main directions as float64 (RANK x D), whatever they are stored as."""
    dirs = np.asarray(spread[1], np.float64)
    step = spread[3] if len(spread) > 3 else None
    return dirs if step is None else dirs * np.asarray(step, np.float64)[:, None]


def quantized(spread: Spread | tuple[np.ndarray, ...]) -> Spread:
    """The spread with int8 directions, one step per row (its largest |value| / 127); the mean and
    scale as given (scale NaN when not given). Directions that are not finite stay as they are (the
    gallery refuses them); int8 ones without their steps are a ValueError."""
    mean = np.asarray(spread[0], np.float32)
    scale = float(spread[2]) if len(spread) > 2 else float("nan")
    step = spread[3] if len(spread) > 3 else None
    if np.asarray(spread[1]).dtype == np.int8:
        if step is None:
            raise ValueError("int8 spread directions need their steps")
        return Spread(mean, np.asarray(spread[1]), scale, np.asarray(step, np.float32))
    d = directions(spread)
    if not np.all(np.isfinite(d)):
        return Spread(mean, d, scale)
    top = np.max(np.abs(d), axis=1, initial=0.0)
    unit = np.where(top > 0, top / 127, 1.0).astype(np.float32)
    return Spread(mean, np.rint(d / unit[:, None]).astype(np.int8), scale, unit)


def spread_stats(embeddings: np.ndarray) -> Spread:
    """The `Spread` of one product's enrollment-view features (N x D). Rows of `dirs` beyond N - 1
    are zero; one view has no spread and no scale."""
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"need at least one embedding, got shape {e.shape}")
    mean = e.mean(axis=0)
    spread = np.zeros((RANK, e.shape[1]), np.float64)
    if e.shape[0] > 1:
        _, sv, vt = np.linalg.svd(e - mean, full_matrices=False)
        k = min(RANK, len(sv))
        spread[:k] = sv[:k, None] * vt[:k] / np.sqrt(e.shape[0] - 1)
    out = quantized((mean, spread))
    return out._replace(scale=float(np.median(spread_distance(out, e))))


def spread_distance(spread: Spread, x: np.ndarray) -> np.ndarray:
    """Squared distance of each row of `x` (N x D) from the product's mean in units of its own spread,
    per dimension: (x - m)^T (S + r I)^-1 (x - m) / D with S = dirs.T @ dirs and the ridge r =
    `DISTANCE_RIDGE` x tr(S) / D, which stands for the variance beyond the kept directions. NaN when
    the product shows no spread. Far from its own views -> large: a read of some other package (the
    open-set check), or of this one under a hand or glare."""
    u = directions(spread)
    r = np.atleast_2d(np.asarray(x, np.float64)) - np.asarray(spread[0], np.float64)
    solved = _ridge_solve(u, DISTANCE_RIDGE, r)
    if solved is None:
        return np.full(len(r), np.nan)
    out: np.ndarray = np.sum(r * solved, axis=1) / u.shape[1]
    return out


def pair_verdict(a: Spread, b: Spread, x: np.ndarray, shrink: float) -> tuple[float, float]:
    """(`pair_z`, `separation`) of one read in one solve: where `x` lies between a and b, and how far
    apart the check puts a and b themselves, both in units of their spread along the discriminant."""
    ma, mb = (np.asarray(v[0], np.float64) for v in (a, b))
    u = np.concatenate([directions(a), directions(b)])
    solved = _ridge_solve(u, shrink, (ma - mb)[None, :])
    if solved is None:
        return 0.0, 0.0
    w = solved[0]
    sd = float(np.sqrt(max(0.5 * float(np.sum((u @ w) ** 2)), 1e-18)))
    z = float(w @ (np.asarray(x, np.float64) - 0.5 * (ma + mb))) / sd
    return z, abs(float(w @ (ma - mb))) / (2 * sd)


def pair_z(a: Spread, b: Spread, x: np.ndarray, shrink: float) -> float:
    """Where `x` lies between products a and b ((mean, spread) each): > 0 nearer a, < 0 nearer b, in
    units of the two products' spread along the discriminant; 0 (no verdict) when the two show no
    spread at all (nothing to measure the distance in). The within-product scatter is U.T @ U with U
    the two spreads stacked (2 RANK x D)."""
    return pair_verdict(a, b, x, shrink)[0]


def separation(a: Spread, b: Spread, shrink: float) -> float:
    """How far apart the pair check puts products a and b: |pair_z| of either one's own mean (the two
    are equal, the discriminant's zero lies half-way), in units of their spread along it. A read of a
    lies about this far out when it looks like a's enrollment views; shelf reads scatter around it, so a
    pair not much further apart than the card's `min_pair_z` has many reads the check cannot settle.
    0 when the two show no spread or no difference."""
    return pair_verdict(a, b, np.asarray(a[0], np.float64), shrink)[1]


def _ridge_solve(u: np.ndarray, shrink: float, v: np.ndarray) -> np.ndarray | None:
    """(U.T U + r I)^-1 applied to each row of `v` (N x D), r = shrink x tr(U.T U) / D; None when U is
    all zero (no spread to measure in). Woodbury: (v - U.T (r I + U U.T)^-1 U v) / r, a solve in the
    K-dimensional span of U's rows (K x D), as cheap for 1280 features as for 128."""
    trace = float(np.sum(u * u))
    if not trace > 1e-9:
        return None
    ridge = shrink * trace / u.shape[1]
    inner = np.linalg.solve(ridge * np.eye(len(u)) + u @ u.T, u @ v.T)  # K x N
    out: np.ndarray = (v - (u.T @ inner).T) / ridge
    return out

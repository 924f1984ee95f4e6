"""The look-alike report (vision_models/lookalike.py) and the pair separation it rests on
(`pairs.separation`), on synthetic spreads whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_vision_pairs import DIM, twins
from vision_models.enroll import Gallery
from vision_models.lookalike import LookAlike, look_alikes
from vision_models.pairs import pair_z, separation, spread_stats

SHRINK = 0.01


def moved(x: np.ndarray, along0: float) -> np.ndarray:
    out = x.copy()
    out[:, 0] += along0
    return out


def test_separation_is_the_pair_z_of_either_mean_and_grows_with_the_difference() -> None:
    a, b, _ = twins(np.random.default_rng(3), 300)  # means 0.3 apart along axis 0, sd 0.05 off the nuisance
    sa, sb = spread_stats(a), spread_stats(b)
    sep = separation(sa, sb, SHRINK)
    assert sep == pytest.approx(abs(pair_z(sa, sb, sa.mean, SHRINK)))
    assert sep == pytest.approx(separation(sb, sa, SHRINK)) == pytest.approx(abs(pair_z(sa, sb, sb.mean, SHRINK)))
    # 0.3 apart over a spread of ~0.05 along the discriminant (its off-nuisance part): half of it in units
    # of that spread, a few units; twice the difference, twice the separation
    assert 1.5 < sep < 6
    far = spread_stats(moved(b, -0.3))
    assert separation(sa, far, SHRINK) == pytest.approx(2 * sep, rel=0.15)
    assert separation(sa, spread_stats(a.copy()), SHRINK) == 0.0  # the same views under two names


def products(rng: np.random.Generator) -> tuple[Gallery, dict[str, np.ndarray]]:
    """A gallery of four products with spreads: `twin_a`/`twin_b` (the `twins` pair), `far_1`,
    `far_2` (means well away along other axes), and `seed` without a spread (as shipped)."""
    a, b, _ = twins(rng, 200)
    views = {"twin_a": a, "twin_b": b}
    for k, axis in (("far_1", 3), ("far_2", 6)):
        v = b.copy()
        v[:, axis] += 2.0
        views[k] = v
    labels = [*views, "seed"]
    protos = np.stack([v.mean(axis=0) / np.linalg.norm(v.mean(axis=0)) for v in views.values()]
                      + [np.eye(DIM)[DIM - 1]])
    gal = Gallery(labels, protos.astype(np.float32), spreads={k: spread_stats(v) for k, v in views.items()})
    return gal, views


def test_look_alikes_name_the_close_pair_both_ways_and_nothing_else() -> None:
    gal, views = products(np.random.default_rng(4))
    sep = separation(gal.spread("twin_a"), gal.spread("twin_b"), SHRINK)  # type: ignore[arg-type]
    far = separation(gal.spread("twin_b"), gal.spread("far_1"), SHRINK)  # type: ignore[arg-type]
    assert sep < 6 < 20 < far
    bar = 8.0
    got = look_alikes(gal, shrink=SHRINK, bar=bar)
    assert set(got) == {"twin_a", "twin_b"}
    (la,) = got["twin_a"]
    assert isinstance(la, LookAlike) and la.sku_id == "twin_b" and la.separation == pytest.approx(sep, abs=0.01)
    assert got["twin_b"][0].sku_id == "twin_a" and got["twin_b"][0].cosine == la.cosine
    # a bar above every pair's separation names every product's nearest, closest first
    everything = look_alikes(gal, shrink=SHRINK, bar=1e9)
    assert set(everything) == {"twin_a", "twin_b", "far_1", "far_2"}  # never the seed: it has no spread
    assert everything["twin_b"][0].sku_id == "twin_a"
    assert [x.separation for x in everything["twin_b"]] == sorted(x.separation for x in everything["twin_b"])
    # only each product's `nearest` by prototype cosine are measured (a pair listed under both)
    labels, protos, _ = gal.entries()
    cos = protos[:4] @ protos[:4].T
    np.fill_diagonal(cos, -np.inf)
    nearest = {frozenset((labels[i], labels[int(np.argmax(cos[i]))])) for i in range(4)}
    one = look_alikes(gal, shrink=SHRINK, bar=1e9, nearest=1)
    assert {frozenset((k, x.sku_id)) for k, v in one.items() for x in v} == nearest
    assert len(nearest) < 6  # fewer than all pairs of four: the restriction did something


def test_no_pair_check_no_report() -> None:
    gal, _ = products(np.random.default_rng(5))
    assert look_alikes(gal, shrink=None, bar=8.0) == {}
    assert look_alikes(gal, shrink=SHRINK, bar=float("inf")) == {}  # a card without min_pair_z
    assert look_alikes(gal, shrink=SHRINK, bar=0.0) == {}
    gal.remove("twin_b")
    gal.remove("far_1")
    gal.remove("far_2")
    assert look_alikes(gal, shrink=SHRINK, bar=1e9) == {}  # one product with a spread: nothing to compare

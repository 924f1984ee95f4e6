"""Look-alikes: enrolled products the pair check can hardly tell apart, reported at enrollment.

Two products whose enrollment views lie close together along the pair check's discriminant
(`pairs.separation`, in units of their own spread along it) give shelf reads that scatter across the
card's `min_pair_z`: many correct reads of either are doubted (sent to weight or review), and the few
wrong ones that clear the bar are trusted. Measured on the calibration designs (2.7.1, docs/vision.md,
"Look-alikes, reported"): twin pairs under 8 had 23-85 % of their correct reads doubted, those above
5-9 %, like products without a twin. So an operator is told at enrollment, on the Products page and
by ``vendedge product list``, which products are that close (`LOOKALIKE_FACTOR` x `min_pair_z`), to
enroll them from sharper views of the mark that differs, or to keep them on shelves apart where the
weight can tell them.

Only products with a spread are compared (the shipped seed has none: its reads never reach the pair
check); among them, each product's `NEAREST` by prototype cosine, the recognizer's own top two.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vision_models.enroll import Gallery
from vision_models.pairs import separation

if TYPE_CHECKING:
    from vision_models.recognizer import Recognizer

LOOKALIKE_FACTOR = 1.5  # reported below 1.5 x the card's min_pair_z (5.5 on 2.7.1: 8.25)
NEAREST = 3  # neighbours by prototype cosine checked per product


class LookAlike(NamedTuple):
    sku_id: str
    cosine: float  # of the two prototypes
    separation: float  # `pairs.separation` of the two spreads


def look_alikes(
    gallery: Gallery, *, shrink: float | None, bar: float, nearest: int = NEAREST
) -> dict[str, list[LookAlike]]:
    """{sku: its look-alikes, closest first} for every product that has one (both ways: a pair is
    listed under each of its two products). Empty without a pair check (`shrink` None) or without a
    finite positive `bar`."""
    if shrink is None or not math.isfinite(bar) or bar <= 0:
        return {}
    labels, protos, _ = gallery.entries()
    have = [i for i, label in enumerate(labels) if gallery.spread(label) is not None]
    if len(have) < 2:
        return {}
    p = np.asarray(protos[have], np.float64)
    cos = p @ p.T
    np.fill_diagonal(cos, -np.inf)
    pairs = {
        (min(a, b), max(a, b))
        for a in range(len(have))
        for b in np.argsort(-cos[a], kind="stable")[: min(nearest, len(have) - 1)].tolist()
    }
    out: dict[str, list[LookAlike]] = {}
    for a, b in sorted(pairs):
        la, lb = labels[have[a]], labels[have[b]]
        sa, sb = gallery.spread(la), gallery.spread(lb)
        if sa is None or sb is None:  # removed meanwhile: the gallery is shared with the daemon
            continue
        sep = separation(sa, sb, shrink)
        if sep < bar:
            c = round(float(cos[a, b]), 4)
            out.setdefault(la, []).append(LookAlike(lb, c, round(sep, 2)))
            out.setdefault(lb, []).append(LookAlike(la, c, round(sep, 2)))
    return {k: sorted(v, key=lambda x: x.separation) for k, v in sorted(out.items())}


def of_recognizer(rec: Recognizer) -> dict[str, list[LookAlike]]:
    """`look_alikes` of the recognizer's gallery with its card's pair check."""
    return look_alikes(rec.gallery, shrink=rec.pair_shrink, bar=LOOKALIKE_FACTOR * rec.min_pair_z)

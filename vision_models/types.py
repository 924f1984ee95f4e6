"""Plain data types of the recognizer API (no numpy, no onnxruntime: cheap to import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EMPTY = "empty"  # the label of a cell that shows bare shelf


@dataclass(frozen=True)
class CellRoi:
    """One item position of one lane, as a pixel rectangle of the shelf camera frame."""

    slot_id: str
    position: int  # 0 = front of the lane
    x: int
    y: int
    w: int
    h: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellRoi:
        """From a layout dict {slot_id, position, x, y, w, h} (e.g. `ShelfRenderer.layout()`)."""
        return cls(str(d["slot_id"]), int(d["position"]), int(d["x"]), int(d["y"]), int(d["w"]), int(d["h"]))


@dataclass(frozen=True)
class CellDetection:
    """What the recognizer sees in one cell: a sku id or "empty", with its score and runner-up.

    `similarity` is the cosine between the cell's embedding and its label's prototype: how much
    the cell looks like *any* known package at all. The softmax `score` saturates (0.999 on a can
    half under a hand); the similarity does not, so it tells a clean view (about 0.97-1.0) from a
    doubtful one (below about 0.8), see the model card's "reliability" section."""

    slot_id: str
    position: int
    label: str
    score: float
    runner_up: str
    runner_up_score: float
    similarity: float = 1.0
    margin: float = 1.0  # cosine of the best label minus that of the runner-up (see `is_doubtful`)
    # `similarity` judged against the label's own references: below the card's doubt.min_quality
    # when the cell is further from the prototype than that SKU's enrollment spread allows (see
    # `Recognizer.recognize`); -1 (unset) = the similarity itself (labels without a measured spread)
    quality: float = -1.0
    # the pair check (`vision_models.pairs`): how surely the read is its label rather than the runner-up,
    # judged by the two products' enrollment spread (|z|); 0 = not checked (a clear margin, or a product
    # without a spread)
    pair_z: float = 0.0
    # the read's distance from its label's enrollment views in units of their own (1: like them; the
    # open-set check, `Recognizer._spread_ratio`); -1 = not measured (a label without a spread; not
    # NaN, so that equal reads compare equal)
    spread_ratio: float = -1.0
    # the runner-up's `spread_ratio` (how far the read lies from the runner-up's own views); -1 = not
    # measured (no spread, or a card without `doubt.ratio_weight`)
    runner_up_ratio: float = -1.0
    # what the margin gate judges (`settled`): the margin, plus the card's `doubt.ratio_weight` x the
    # log of runner_up_ratio / spread_ratio when both are measured (a runner-up whose own views lie
    # much further from the read than the label's is no live alternative); None: the margin itself
    lead: float | None = None
    # how far apart the pair check puts the read's two products (`pairs.separation`: their own views,
    # in units of their spread along its discriminant); 0 = not checked
    pair_separation: float = 0.0

    def __post_init__(self) -> None:
        if self.quality < 0:
            object.__setattr__(self, "quality", self.similarity)
        if self.lead is None:
            object.__setattr__(self, "lead", self.margin)


def is_doubtful(det: CellDetection, min_quality: float, min_margin: float, min_pair_z: float = float("inf")) -> bool:
    """A product reading to doubt: it looks less like its label than that label's own references
    do (`quality` below `min_quality`: a hand, glare, or a product nobody enrolled), or the runner-up
    is nearly as close (lead below `min_margin`, the model card's `doubt.min_margin`: look-alikes
    and never-seen products) and the pair check did not settle it (`pair_z` below `min_pair_z`, the
    card's `doubt.min_pair_z`; none: never). An empty cell is never doubted."""
    return det.label != EMPTY and (det.quality < min_quality or not settled(det, min_margin, min_pair_z))


def settled(det: CellDetection, min_margin: float, min_pair_z: float = float("inf")) -> bool:
    """The runner-up is no live alternative: a clear lead (`CellDetection.lead`: the margin, weighed
    by the two products' spread ratios when the card says so), or the pair check was sure."""
    return (det.margin if det.lead is None else det.lead) >= min_margin or det.pair_z >= min_pair_z


class ModelError(Exception):
    """The model, its card or its gallery is missing or corrupt; take-and-go must be disabled."""

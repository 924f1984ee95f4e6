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
    """What the recognizer sees in one cell: a sku id or "empty", with its score and runner-up."""

    slot_id: str
    position: int
    label: str
    score: float
    runner_up: str
    runner_up_score: float


class ModelError(Exception):
    """The model, its card or its gallery is missing or corrupt; take-and-go must be disabled."""

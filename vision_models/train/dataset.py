"""The training data, read from the files `python -m hw_sim.camera.dataset --out DIR` wrote.

The data *is* simulator output, but `vision_models` never imports the simulator: the two steps
meet only through the .npz/.json files in DIR (see hw_sim/camera/dataset.py for the layout).
Arrays are loaded with `allow_pickle=False`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision_models.types import EMPTY, CellRoi

FORMAT = 1  # the file layout this reader understands (meta.json "format")
DATA_COMMAND = "python -m hw_sim.camera.dataset --out DIR --seed 1000"


class DataError(Exception):
    """The data directory is missing, incomplete or was written for another layout."""


@dataclass(frozen=True)
class Cells:
    """Cell crops (uint8 N x size x size x 3, BGR) with their true labels and frame seeds."""

    x: np.ndarray
    labels: list[str]
    frame: np.ndarray

    def frames(self) -> list[slice]:
        """The cells of each frame, in file order (a frame is one batch, as at runtime)."""
        starts = np.flatnonzero(np.r_[True, self.frame[1:] != self.frame[:-1]])
        ends = np.r_[starts[1:], len(self.frame)]
        return [slice(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class HeldOut(Cells):
    """Held-out cells plus what the card's slices need: hands in the frame, look-alike pair."""

    occlusion: np.ndarray  # the frame's hand occlusion per cell (0 = no hands)
    pair: list[str]  # "a/b" when the true label belongs to a look-alike pair, else ""
    cells: list[tuple[str, int]]  # (slot_id, position) of each cell in its original frame


def as_strip(crops: np.ndarray, cells: list[tuple[str, int]]) -> tuple[np.ndarray, list[CellRoi]]:
    """Lay stored crops side by side as one frame with one exact square ROI per crop, so the
    runtime `Recognizer.recognize` can score them: its crop of such an ROI is the stored crop
    itself, and resizing size -> size is a plain copy."""
    n, size = len(crops), int(crops.shape[1])
    strip = np.ascontiguousarray(crops.transpose(1, 0, 2, 3).reshape(size, n * size, 3))
    return strip, [CellRoi(s, p, i * size, 0, size, size) for i, (s, p) in enumerate(cells)]


class DataDir:
    """One data directory: `meta.json` plus the .npz sets it names."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"no readable {self.path}/meta.json ({exc}); run `{DATA_COMMAND}` first") from exc
        if self.meta.get("format") != FORMAT or self.meta.get("empty") != EMPTY:
            raise DataError(f"{self.path}/meta.json: format {self.meta.get('format')!r}, expected {FORMAT}")

    def _load(self, part: str) -> Any:
        name = self.meta[part]["file"]
        try:
            return np.load(self.path / name, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {self.path / name}: {exc}") from exc

    @property
    def size(self) -> int:
        """Side of the stored crops (must equal the model's input size)."""
        return int(self.meta["size"])

    @property
    def demo_skus(self) -> list[str]:
        return list(self.meta["demo_skus"])

    @property
    def distractors(self) -> list[str]:
        return list(self.meta["distractors"])

    @property
    def lookalike_pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.meta["lookalike_pairs"]]

    def _cells(self, part: str) -> Cells:
        z = self._load(part)
        return Cells(z["x"], [str(v) for v in z["labels"]], z["frame"])

    def train(self) -> Cells:
        """The training cells (demo SKUs, empty and distractors)."""
        return self._cells("train")

    def calibration(self) -> Cells:
        """The frames the softmax scale is calibrated on (training side of the seed split)."""
        return self._cells("calibration")

    def gallery_refs(self) -> dict[str, list[np.ndarray]]:
        """Reference cell renders per gallery label (uncropped cell rectangles)."""
        z = self._load("gallery")
        refs = z["refs"]
        return {str(lb): list(refs[i]) for i, lb in enumerate(z["labels"])}

    def heldout(self) -> HeldOut:
        """The held-out evaluation cells (seeds 0..N-1, never trained on)."""
        z = self._load("heldout")
        cells = [(str(s), int(p)) for s, p in zip(z["slot_id"], z["position"], strict=True)]
        return HeldOut(z["x"], [str(v) for v in z["labels"]], z["frame"], z["occlusion"],
                       [str(v) for v in z["pair"]], cells)

    def latency_frames(self) -> list[tuple[np.ndarray, list[CellRoi]]]:
        """Full frames with their cell ROIs, for timing `recognize()` end to end."""
        z = self._load("latency")
        frames, slots, positions, roi = z["frames"], z["slot_id"], z["position"], z["roi"]
        return [(frames[f], [CellRoi(str(s), int(p), *(int(v) for v in r))
                             for s, p, r in zip(slots[f], positions[f], roi[f], strict=True)])
                for f in range(len(frames))]

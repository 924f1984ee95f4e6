"""Which cells of a fixed shelf camera changed between two frames.

After a take-and-go session most cells hold exactly what they held before the door opened: the
recognizer need not read them again (the same pixels give the same read; reading 120 cells costs
~2 ms each on a 2-core board). A cell counts as unchanged only when no 4 x 4 pixel patch of it
differs by `CHANGE_LEVEL` grey levels or more in any colour channel, once the two frames are put
on the same exposure. Anything else — a package taken, turned, moved, swapped for its look-alike,
a hand, a bumped camera, a frame of another size — is "changed" and read again: the check can only
cost time, never replace a read of a cell that looks different.

Measured on the simulator's cameras (JPEG 85, sensor noise sigma 2-6, exposure 0.8-1.2 between
frames): unchanged cells differ by at most ~25 levels; the smallest real change, a look-alike twin
in the very same pose (a mark of ~12 % of the package in another colour), by 65 or more (the
simulator's pairs 80-210, the evaluation generator's one-mark twins 65-200 at a 40 px package;
docs/take-and-go.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vision_models.types import CellRoi

CHANGE_LEVEL = 40.0  # grey levels a 4 x 4 px patch must differ by (after exposure matching) to count as changed
_DARK, _SATURATED = 24.0, 250.0  # pixels outside this range say nothing about the exposure ratio


def exposure_gain(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per channel, how much brighter `after` is than `before` (float32 x 3): the median ratio of
    well-exposed pixels, most of which show the same unchanged shelf. 1 when too few to tell."""
    a, b = before[::3, ::3].reshape(-1, 3), after[::3, ::3].reshape(-1, 3)
    ok = ((a > _DARK) & (a < _SATURATED) & (b < _SATURATED)).all(axis=1)
    if ok.sum() < 100:
        return np.ones(3, np.float32)
    gain: np.ndarray = np.median(b[ok] / a[ok], axis=0).astype(np.float32)
    return gain


def changed_cells(before: np.ndarray, after: np.ndarray, rois: Sequence[CellRoi],
                  level: float = CHANGE_LEVEL) -> np.ndarray:
    """One bool per ROI: True when the cell may hold something else in `after` than in `before`
    (two BGR uint8 frames of the same camera). Every ROI is changed when the frames differ in size.

    Both frames are halved (a 2 x 2 average, which also smooths sensor noise), `before` is scaled by
    the exposure gain, both are clipped at the level where either saturates (a highlight that clips
    in one frame only is not a change), and each ROI's largest 2 x 2 mean (4 x 4 px at full size) of
    the per-pixel largest channel difference is compared with `level`."""
    if before.shape != after.shape or before.ndim != 3 or before.shape[2] != 3:
        return np.ones(len(rois), bool)
    h, w = before.shape[:2]
    half = (max(1, w // 2), max(1, h // 2))
    a = cv2.resize(before, half, interpolation=cv2.INTER_AREA).astype(np.float32)
    b = cv2.resize(after, half, interpolation=cv2.INTER_AREA).astype(np.float32)
    gain = exposure_gain(a, b)
    ceiling = (*(float(v) for v in _SATURATED * np.minimum(gain, 1.0)), 0.0)
    scaled = cv2.min(cv2.multiply(a, (*(float(v) for v in gain), 0.0)), ceiling)
    per_channel = cv2.split(cv2.absdiff(scaled, cv2.min(b, ceiling)))
    patch = cv2.boxFilter(cv2.max(cv2.max(per_channel[0], per_channel[1]), per_channel[2]), -1, (2, 2))
    out = np.ones(len(rois), bool)
    for i, r in enumerate(rois):
        cell = patch[max(0, r.y // 2):max(0, (r.y + r.h) // 2), max(0, r.x // 2):max(0, (r.x + r.w) // 2)]
        if cell.size:
            out[i] = bool(cell.max() >= level)
    return out

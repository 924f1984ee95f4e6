"""Views the recognizer makes of one image: enrollment augmentation and the second look.

A top-down camera sees a package at any turn in its cell, a little off-centre, lit differently and
sometimes blurred, while an operator's reference shots are few and mostly upright. Each reference
is therefore embedded as 32 views (8 turns x {as is, scaled/shifted, brightness/contrast, blur}),
all averaged into the prototype, and their spread gives the SKU's radius (`Recognizer.reference`).
No mirror images: a camera above the shelf never sees a package mirrored (printed text, marks on
one side), and on held-out designs flips added nothing (docs/vision.md, ablation).

A doubtful read gets a *second look* (`quarter_turns`): the same crop turned 90/180/270 degrees,
the 90 and 270 degree ones zoomed in by the card's `doubt.second_look_zoom` (1.2 since shelf-v2
2.5.2: the middle 83 %, where a look-alike's one small mark is bigger; 1 before), the four
embeddings averaged.
"""

from __future__ import annotations

import cv2
import numpy as np

from vision_models.preprocess import resize_square

TURNS = tuple(range(0, 360, 45))
VIEWS_PER_IMAGE = 4 * len(TURNS)
_SEED = 20_261_202  # fixed: the same references always give the same prototype


def _turn(im: np.ndarray, angle: float, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    h, w = im.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)  # pixel centres
    m[:, 2] += np.asarray(shift, np.float64)
    return cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def enrollment_views(image: np.ndarray, size: int) -> list[np.ndarray]:
    """`VIEWS_PER_IMAGE` size x size BGR uint8 views of one reference image (centre square)."""
    sq = resize_square(image, size)
    rng = np.random.default_rng(_SEED)
    px = size / 64
    out = []
    for a in TURNS:
        plain = _turn(sq, a)
        out.append(plain)
        sx, sy = rng.uniform(-3, 3, 2) * px
        out.append(_turn(sq, a, float(rng.uniform(0.88, 1.12)), (float(sx), float(sy))))
        lit = plain.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
        out.append(np.clip(lit, 0, 255).astype(np.uint8))
        out.append(cv2.GaussianBlur(plain, (0, 0), float(rng.uniform(0.6, 1.2)) * px))
    return out


def quarter_turns(crops: np.ndarray, zoom: float = 1.0) -> np.ndarray:
    """N x S x S x 3 crops -> 3N: all crops turned 90, then 180, then 270 degrees; the 90 and 270
    degree ones first zoomed in by `zoom` about the centre (1: not at all)."""
    zoomed = crops if zoom == 1.0 else np.stack([_turn(c, 0.0, zoom) for c in crops])
    return np.ascontiguousarray(np.concatenate([np.rot90(zoomed, 1, axes=(1, 2)), np.rot90(crops, 2, axes=(1, 2)),
                                                np.rot90(zoomed, 3, axes=(1, 2))]))

"""Views the recognizer makes of one image: enrollment augmentation and the second look.

A top-down camera sees a package at any turn in its cell, a little off-centre, lit differently,
sometimes blurred, half under a finger or under a glare spot, through a JPEG stream, while an
operator's reference shots are few, mostly upright and clean. Each reference is therefore embedded
as 56 views (8 turns x {as is, scaled/shifted, brightness/contrast, blur, a finger from the edge, a
glare spot, noise + JPEG}), all averaged into the prototype; their spread gives the SKU's radius and
the spread the open-set and pair checks measure a read against (`Recognizer.reference`). The last
three (since `ENROLLMENT_RECIPE` "enroll-2", 2026-12-06) put the shelf's usual nuisances into the
spread, so a read with a finger on it is no longer far from every reference (docs/vision.md).
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
VIEWS_PER_IMAGE = 7 * len(TURNS)
# what a stored gallery's prototypes were made with, besides the model (`Recognizer.model_id`): a
# gallery made with other views is enrolled again from its kept reference crops
ENROLLMENT_RECIPE = "enroll-2"
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
        out.append(_fingered(plain, rng))
        out.append(_glared(plain, rng))
        out.append(_jpeg(plain, rng))
    return out


def _fingered(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A finger (a skin-toned bar, 10-22 % of the side wide) from outside the cell to 15-40 % of the side
    from its centre."""
    s = im.shape[0]
    a, c = rng.uniform(0, 2 * np.pi), (s - 1) / 2
    reach = rng.uniform(0.15, 0.4) * s  # the tip's distance from the centre
    end = (int(c + np.cos(a) * s), int(c + np.sin(a) * s))
    tip = (int(c + np.cos(a) * reach), int(c + np.sin(a) * reach))
    mask = np.zeros((s, s), np.uint8)
    cv2.line(mask, end, tip, 255, max(1, int(rng.uniform(0.1, 0.22) * s)), cv2.LINE_AA)
    m = mask.astype(np.float32)[..., None] / 255
    skin = np.array([rng.uniform(60, 170), rng.uniform(90, 190), rng.uniform(120, 240)], np.float32)  # BGR
    return np.clip(im * (1 - m) + skin * m, 0, 255).astype(np.uint8)


def _glared(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft specular spot (a light reflected off the package or the door glass)."""
    s = im.shape[0]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.06, 0.18)
    spot = rng.uniform(60, 160) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    out: np.ndarray = np.clip(im.astype(np.float32) + spot[..., None], 0, 255).astype(np.uint8)
    return out


def _jpeg(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise, then a JPEG round trip at quality 35-79 (an IP camera's stream)."""
    noisy: np.ndarray = np.clip(im + rng.standard_normal(im.shape) * rng.uniform(2, 6), 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 80))])
    back = cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else None
    return noisy if back is None else np.asarray(back)


def quarter_turns(crops: np.ndarray, zoom: float = 1.0) -> np.ndarray:
    """N x S x S x 3 crops -> 3N: all crops turned 90, then 180, then 270 degrees; the 90 and 270
    degree ones first zoomed in by `zoom` about the centre (1: not at all)."""
    zoomed = crops if zoom == 1.0 else np.stack([_turn(c, 0.0, zoom) for c in crops])
    return np.ascontiguousarray(np.concatenate([np.rot90(zoomed, 1, axes=(1, 2)), np.rot90(crops, 2, axes=(1, 2)),
                                                np.rot90(zoomed, 3, axes=(1, 2))]))

"""A broader drawing style for the training generator (`randomized.generate(style="broad")`).

`randomized` draws every design flat: one body colour, panels, stripes, Hershey words, logos, on an
outline from a small family. A shop's packages are not drawn that way: bottles and pouches, bodies
printed in gradients, blocks of small print, barcodes, photos of the food, round packages shaded
and with a specular streak, foil bags crinkled; and on a shelf the neighbour's edge, the door glass's
reflection, haze, vignetting and motion blur. This module adds those, each with its own
probability, so that an embedding trained on the mix cannot lean on the flat look of one
renderer. All three steps are pure functions of their inputs and a numpy Generator:

- `restyle` (before a look-alike mark is drawn): another outline, a gradient body, more label
  elements;
- `finish` (after the mark; twins get the same Generator state, so they differ only in the mark):
  cylinder shading with a specular streak, crinkles;
- `shelf_extras` (a shelf view, never an enrollment shot): the scene around the package.

Nothing here is used for evaluation; the novel-product bench has its own generator and this module
never imports it.
"""

from __future__ import annotations

import cv2
import numpy as np

_INK = ((20.0, 20.0, 20.0), (245.0, 245.0, 245.0))


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    c = rng.integers(0, 256, 3)
    return float(c[0]), float(c[1]), float(c[2])


def _silhouette(size: int, rng: np.random.Generator) -> np.ndarray:
    """Another package outline (uint8 0/255): bottle, pouch, can or a smooth blob."""
    m = np.zeros((size, size), np.uint8)
    c, r = size / 2, size * 0.45
    kind = int(rng.integers(4))
    if kind == 0:  # bottle: body, shoulder, neck, cap
        w, nw = r * rng.uniform(0.35, 0.55), r * rng.uniform(0.12, 0.22)
        top, shoulder = c - r, c - r * rng.uniform(0.1, 0.45)
        pts = [(c - nw, top), (c + nw, top), (c + nw, shoulder - r * 0.25), (c + w, shoulder),
               (c + w, c + r), (c - w, c + r), (c - w, shoulder), (c - nw, shoulder - r * 0.25)]
        cv2.fillPoly(m, [np.array(pts, np.int32)], 255, cv2.LINE_AA)
    elif kind == 1:  # pouch: a trapezoid with a serrated top seal
        wt, wb = r * rng.uniform(0.6, 0.9), r * rng.uniform(0.7, 1.0)
        n = int(rng.integers(8, 16))
        top = [(c - wt + 2 * wt * i / n, c - r + (3 if i % 2 else 0)) for i in range(n + 1)]
        pts = [*top, (c + wb, c + r), (c - wb, c + r)]
        cv2.fillPoly(m, [np.array(pts, np.int32)], 255, cv2.LINE_AA)
    elif kind == 2:  # can seen from the side: a rectangle with elliptic ends
        w, e = r * rng.uniform(0.5, 0.8), r * rng.uniform(0.08, 0.2)
        cv2.rectangle(m, (int(c - w), int(c - r + e)), (int(c + w), int(c + r - e)), 255, -1)
        for y in (c - r + e, c + r - e):
            cv2.ellipse(m, (int(c), int(y)), (int(w), int(e)), 0, 0, 360, 255, -1, cv2.LINE_AA)
    else:  # smooth blob: a radius with a few low harmonics
        t = np.linspace(0, 2 * np.pi, 90, endpoint=False)
        rad = np.ones_like(t)
        for k in range(2, 5):
            rad += rng.uniform(0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        rad *= r / rad.max()
        pts = np.stack([c + rad * np.cos(t), c + rad * np.sin(t)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 255, cv2.LINE_AA)
    return m


def _text_block(img: np.ndarray, rng: np.random.Generator) -> None:
    """Lines of small print (ingredients, a slogan)."""
    size = img.shape[0]
    x, y = int(rng.uniform(0.1, 0.5) * size), int(rng.uniform(0.15, 0.7) * size)
    col = _INK[int(rng.integers(2))] if rng.random() < 0.7 else _colour(rng)
    scale, font = rng.uniform(0.22, 0.34), int(rng.choice([0, 1, 2, 5]))
    for i in range(int(rng.integers(2, 6))):
        word = "".join(chr(97 + int(rng.integers(26))) for _ in range(int(rng.integers(3, 10))))
        cv2.putText(img, word, (x, y + i * int(4 + scale * 16)), font, scale, col, 1, cv2.LINE_AA)


def _brand(img: np.ndarray, rng: np.random.Generator) -> None:
    """A brand word, often italic and outlined."""
    size = img.shape[0]
    word = "".join(chr(65 + int(rng.integers(26))) for _ in range(int(rng.integers(3, 7))))
    font = int(rng.choice([0, 2, 3, 4, 6, 7])) | (cv2.FONT_ITALIC if rng.random() < 0.5 else 0)
    scale = rng.uniform(0.5, 1.0)
    (w, _h), _ = cv2.getTextSize(word, font, scale, 2)
    x = int(max(2, (size - w) / 2 + rng.uniform(-10, 10)))
    y = int(rng.uniform(0.3, 0.75) * size)
    thick = int(rng.integers(1, 4))
    if rng.random() < 0.5:
        cv2.putText(img, word, (x, y), font, scale, _INK[int(rng.integers(2))], thick + 3, cv2.LINE_AA)
    cv2.putText(img, word, (x, y), font, scale, _colour(rng), thick, cv2.LINE_AA)


def _barcode(img: np.ndarray, rng: np.random.Generator) -> None:
    size = img.shape[0]
    w, h = int(rng.uniform(0.18, 0.3) * size), int(rng.uniform(0.1, 0.18) * size)
    x, y = int(rng.uniform(0.15, 0.85 - w / size) * size), int(rng.uniform(0.5, 0.85 - h / size) * size)
    cv2.rectangle(img, (x, y), (x + w, y + h), (250, 250, 250), -1)
    u = x + 2
    while u < x + w - 2:
        bar = int(rng.integers(1, 3))
        if rng.random() < 0.55:
            cv2.rectangle(img, (u, y + 2), (u + bar - 1, y + h - 3), (15, 15, 15), -1)
        u += bar


def _photo(img: np.ndarray, rng: np.random.Generator) -> None:
    """A picture on the label: smooth coloured texture inside an ellipse or a rounded box."""
    size = img.shape[0]
    noise = rng.standard_normal((size, size, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), rng.uniform(1.5, 5))
    tex = tex / (tex.std() + 1e-6) * rng.uniform(25, 60) + np.asarray(_colour(rng), np.float32)
    region = np.zeros((size, size), np.uint8)
    cx, cy = int(rng.uniform(0.3, 0.7) * size), int(rng.uniform(0.3, 0.7) * size)
    ax, ay = int(rng.uniform(0.12, 0.25) * size), int(rng.uniform(0.1, 0.22) * size)
    if rng.random() < 0.5:
        cv2.ellipse(region, (cx, cy), (ax, ay), 0, 0, 360, 255, -1, cv2.LINE_AA)
    else:
        cv2.rectangle(region, (cx - ax, cy - ay), (cx + ax, cy + ay), 255, -1)
    a = region.astype(np.float32)[..., None] / 255
    img[:] = (img * (1 - a) + np.clip(tex, 0, 255) * a).astype(np.uint8)


def restyle(img: np.ndarray, mask: np.ndarray, body: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A drawn design (float32 image, float mask in 0..1, its body colour) in the broad style."""
    img = img.astype(np.uint8)  # OpenCV draws text on 8-bit images only
    size = img.shape[0]
    if rng.random() < 0.4:
        mask = _silhouette(size, rng).astype(np.float32) / 255
    if rng.random() < 0.5:  # the body printed as a gradient
        plain = np.all(img == body, axis=2)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        ang = rng.uniform(0, 2 * np.pi)
        t = np.clip((xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang) + 0.5, 0, 1)[..., None]
        grad = body * (1 - t) + np.asarray(_colour(rng), np.float32) * t
        img[plain] = grad[plain].astype(np.uint8)
    for p, draw in ((0.35, _photo), (0.5, _text_block), (0.45, _brand), (0.25, _barcode)):
        if rng.random() < p:
            draw(img, rng)
    if rng.random() < 0.3:  # a printed border along the outline
        m8 = (mask * 255).astype(np.uint8)
        contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, _colour(rng), int(rng.integers(2, 5)), cv2.LINE_AA)
    return img.astype(np.float32), mask


def finish(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Round-package shading with a specular streak, or a crinkled foil bag (or neither)."""
    size = img.shape[0]
    img = img.astype(np.float32)
    u = rng.random()
    if u < 0.4:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        ang = rng.uniform(-0.2, 0.2) + (np.pi / 2 if rng.random() < 0.3 else 0.0)
        v = (xx * np.cos(ang) + yy * np.sin(ang)) * 2.2  # across the package, about -1..1
        shade = 1 - rng.uniform(0.2, 0.55) * np.clip(v, -1, 1) ** 2
        spot = rng.uniform(-0.5, 0.5)
        streak = rng.uniform(50, 150) * np.exp(-((v - spot) ** 2) / (2 * rng.uniform(0.03, 0.12) ** 2))
        img = img * shade[..., None] + streak[..., None]
    elif u < 0.65:
        field = cv2.GaussianBlur(rng.standard_normal((size, size, 2)).astype(np.float32), (0, 0), rng.uniform(4, 9))
        field /= np.abs(field).max() + 1e-6
        amp = rng.uniform(1.5, 4.0)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        mx, my = xx + field[..., 0] * amp, yy + field[..., 1] * amp
        img = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = cv2.remap(mask.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        folds = cv2.Sobel(field[..., 0], cv2.CV_32F, 1, 0, ksize=3)
        img = img * (1 + rng.uniform(0.5, 2.0) * folds / (np.abs(folds).max() + 1e-6) * 0.25)[..., None]
    return np.clip(img, 0, 255), mask


def shelf_extras(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What surrounds a package on a shelf, on a float32 view canvas (s x s x 3)."""
    s = canvas.shape[0]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    if rng.random() < 0.25:  # a neighbour's edge reaching in from one side
        side, depth = int(rng.integers(4)), rng.uniform(0.08, 0.22)
        d = (xx, 1 - xx, yy, 1 - yy)[side]
        edge = (d < depth + 0.03 * np.sin(2 * np.pi * (yy if side < 2 else xx) * rng.uniform(0.5, 2)))
        col = np.asarray(_colour(rng), np.float32)
        canvas[edge] = col * rng.uniform(0.6, 1.0)
    if rng.random() < 0.2:  # a shelf edge's shadow
        ang = rng.uniform(0, 2 * np.pi)
        t = (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang)
        canvas *= (1 - rng.uniform(0.2, 0.5) / (1 + np.exp(-(t - rng.uniform(0.1, 0.4)) * 30)))[..., None]
    if rng.random() < 0.25:  # the door glass's reflection: a soft bright band across the view
        ang = rng.uniform(0, np.pi)
        t = (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang) - rng.uniform(-0.4, 0.4)
        canvas += (rng.uniform(20, 80) * np.exp(-(t ** 2) / (2 * rng.uniform(0.05, 0.2) ** 2)))[..., None]
    if rng.random() < 0.15:  # haze / a fogged door
        h = rng.uniform(0.1, 0.35)
        canvas[:] = canvas * (1 - h) + h * rng.uniform(120, 220)
    if rng.random() < 0.2:  # vignetting
        canvas *= (1 - rng.uniform(0.2, 0.5) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2)[..., None]
    if rng.random() < 0.15:  # motion blur
        n = int(rng.integers(3, 8))
        k = np.zeros((n, n), np.float32)
        k[n // 2, :] = 1 / n
        k = cv2.warpAffine(k, cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1.0), (n, n))
        canvas = cv2.filter2D(canvas, -1, k / max(float(k.sum()), 1e-6))
    if rng.random() < 0.2:  # a strong colour cast (warm or cold light)
        canvas *= rng.uniform(0.7, 1.3, 3).astype(np.float32)
    return canvas

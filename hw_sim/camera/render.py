"""Top-down synthetic camera for one fridge shelf: lanes are columns, item positions are rows.

Front of the shelf (position 0) is the bottom row of the image. Every cell shows either a package
top view (see `appearance.py`) or the textured shelf surface. Variations a real camera would add —
lighting gain, sensor noise, small placement jitter and rotation, a hand partly covering cells —
are parameters of `render`, drawn from a seeded `numpy.random.Generator` so frames are
reproducible. Imports numpy and cv2 only (the simulator never imports the daemon).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from hw_sim.camera.appearance import Appearance, appearance_for
from hw_sim.world import FridgeWorld

ITEM_FILL = 0.86  # item box side as a fraction of the cell's short side
_SHELF_BGR = (178, 184, 188)
_SKIN_BGR = (120, 160, 215)


def shelf_surface(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Brushed-steel shelf texture (BGR uint8): horizontal streaks, fine grain, soft vignette."""
    streaks = rng.standard_normal((height, width)).astype(np.float32)
    streaks = cv2.GaussianBlur(streaks, (0, 0), sigmaX=12.0, sigmaY=0.8) * 18.0
    grain = rng.standard_normal((height, width)).astype(np.float32) * 2.5
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
    shade = 1.0 - 0.10 * r2
    base = np.array(_SHELF_BGR, np.float32)[None, None, :]
    img = (base + (streaks + grain)[..., None]) * shade[..., None]
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _pattern(layer: np.ndarray, app: Appearance, s: int) -> None:
    """Draw the label pattern in the accent colour over the whole layer (clipped later by the mask)."""
    acc = tuple(int(c) for c in app.accent)
    if app.pattern == "band":
        cv2.rectangle(layer, (0, int(s * 0.40)), (s, int(s * 0.60)), acc, -1)
    elif app.pattern == "dot":
        cv2.circle(layer, (s // 2, s // 2), int(s * 0.2), acc, -1, cv2.LINE_AA)
    elif app.pattern == "stripes":
        t = max(2, int(s * 0.08))
        for k in (-0.35, 0.0, 0.35):
            off = int(k * s)
            cv2.line(layer, (off, s), (s + off, 0), acc, t, cv2.LINE_AA)
    else:  # "text": rows of small marks, like print on a wrapper
        mw, mh = max(2, int(s * 0.11)), max(2, int(s * 0.06))
        for row in range(3):
            y = int(s * (0.3 + 0.18 * row))
            for col in range(4):
                x = int(s * (0.2 + 0.16 * col))
                cv2.rectangle(layer, (x, y), (x + mw, y + mh), acc, -1)


def _shape_mask(app: Appearance, s: int) -> np.ndarray:
    """uint8 mask (0/255, anti-aliased) of the package footprint inside an s x s box."""
    mask = np.zeros((s, s), np.uint8)
    c = s // 2
    w, h = min(s - 2, int(s * app.size[0] * 0.95)), min(s - 2, int(s * app.size[1] * 0.95))
    if app.shape in ("can", "bottle"):
        cv2.circle(mask, (c, c), max(3, min(w, h) // 2), 255, -1, cv2.LINE_AA)
    elif app.shape == "pouch":  # crimped top and bottom edges
        x0, x1, y0, y1 = c - w // 2, c + w // 2, c - h // 2, c + h // 2
        teeth = 7
        top = [(x0 + (x1 - x0) * i // teeth, y0 + (3 if i % 2 else 0)) for i in range(teeth + 1)]
        bot = [(x1 - (x1 - x0) * i // teeth, y1 - (3 if i % 2 else 0)) for i in range(teeth + 1)]
        cv2.fillPoly(mask, [np.array(top + bot, np.int32)], 255, cv2.LINE_AA)
    else:
        cv2.rectangle(mask, (c - w // 2, c - h // 2), (c + w // 2, c + h // 2), 255, -1)
    return mask


def draw_item(app: Appearance, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical top view of a package in an s x s box: (BGR float32 patch, float32 alpha mask)."""
    layer = np.empty((s, s, 3), np.uint8)
    layer[:] = app.body
    _pattern(layer, app, s)
    c = s // 2
    if app.shape == "bottle" and app.cap is not None:
        cv2.circle(layer, (c, c), int(s * 0.2), tuple(min(255, int(v) + 30) for v in app.body), -1, cv2.LINE_AA)
        cv2.circle(layer, (c, c), int(s * 0.15), app.cap, -1, cv2.LINE_AA)
    elif app.shape == "can" and app.cap is not None:
        cv2.ellipse(layer, (c, int(s * 0.24)), (int(s * 0.09), int(s * 0.05)), 0, 0, 360, app.cap, -1,
                    cv2.LINE_AA)
    mask = _shape_mask(app, s)
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8))
    dark = (layer.astype(np.float32) * 0.55).astype(np.uint8)
    layer = np.where(edge[..., None] > 0, dark, layer)
    return layer.astype(np.float32), mask.astype(np.float32) / 255.0


Placement = tuple[int, int, np.ndarray, np.ndarray, np.ndarray] | None  # x0, y0, shade, keep, add
Art = tuple[np.ndarray, np.ndarray]  # a package's top view: BGR float32 patch, float32 alpha 0..1 (square)


def scaled_art(art: Art, s: int) -> Art:
    """Artwork of any square size resized to an s x s item box (INTER_AREA, as a camera would see it)."""
    patch, alpha = art
    if patch.shape[:2] != alpha.shape[:2] or patch.shape[0] != patch.shape[1] or patch.ndim != 3:
        raise ValueError(f"artwork must be a square BGR patch with an alpha of its size, got "
                         f"{patch.shape} and {alpha.shape}")
    return (cv2.resize(patch.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA),
            np.clip(cv2.resize(alpha.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA), 0.0, 1.0))


def _pose(patch: np.ndarray, alpha: np.ndarray, cx: int, cy: int, rng: np.random.Generator,
          jitter_px: int, frame_w: int, frame_h: int) -> Placement:
    """Rotate/scale/jitter one item centred at (cx, cy): the blend factors, or None if it would be
    clipped by the frame edge (never with the shipped layout)."""
    s = patch.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-12, 12)), float(rng.uniform(0.96, 1.04)))
    p = cv2.warpAffine(patch, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    a = cv2.warpAffine(alpha, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=0)
    j = int(jitter_px)
    dx, dy = (int(v) for v in rng.integers(-j, j + 1, size=2)) if j > 0 else (0, 0)
    x0, y0 = cx - s // 2 + dx, cy - s // 2 + dy
    if x0 < 0 or y0 < 0 or x0 + s > frame_w or y0 + s > frame_h:
        return None
    shadow = np.roll(a, (3, 2), axis=(0, 1))[..., None]
    a3 = a[..., None]
    return x0, y0, 1.0 - 0.35 * shadow, 1.0 - a3, p * a3


def _blend(canvas: np.ndarray, placement: Placement) -> None:
    """Alpha-blend a posed item (with its soft shadow) into the float canvas, in place."""
    if placement is None:
        return
    x0, y0, shade, keep, add = placement
    s = add.shape[0]
    roi = canvas[y0:y0 + s, x0:x0 + s]
    roi *= shade
    roi *= keep
    roi += add


def _occlude(canvas: np.ndarray, cell: dict[str, Any], frac: float, rng: np.random.Generator) -> None:
    """A skin-toned blob (a hand or fingers) covering about `frac` of the cell's area."""
    area = frac * cell["w"] * cell["h"]
    ratio = float(rng.uniform(1.0, 2.0))
    b = max(2.0, np.sqrt(area / (np.pi * ratio)))
    a = b * ratio
    cx = int(cell["x"] + rng.uniform(0.15, 0.85) * cell["w"])
    cy = int(cell["y"] + rng.uniform(0.15, 0.85) * cell["h"])
    tone = np.array(_SKIN_BGR, np.float32) * float(rng.uniform(0.8, 1.1))
    cv2.ellipse(canvas, (cx, cy), (int(a), int(b)), float(rng.uniform(0, 180)), 0, 360,
                tuple(float(v) for v in tone), -1, cv2.LINE_AA)


class ShelfRenderer:
    """Renders the top-down camera view of one shelf of a `FridgeWorld` as a BGR uint8 frame.

    `art` maps sku ids to their own artwork (`Art`), drawn instead of the `appearance.py` look: a
    tester stocks the simulated fridge with products drawn elsewhere (an operator's catalogue).
    """

    def __init__(self, world: FridgeWorld, shelf: int, *, width: int = 640, height: int = 480,
                 seed: int = 0, art: Mapping[str, Art] | None = None) -> None:
        self.world = world
        self._art = dict(art or {})
        self.shelf = shelf
        self.width, self.height = width, height
        lanes = world.lanes_on_shelf(shelf)
        if not lanes:
            raise ValueError(f"shelf {shelf} has no lanes")
        self._slots = [ln.slot_id for ln in lanes]
        self.rows = max(ln.capacity for ln in lanes)
        mx, my = int(width * 0.03), int(height * 0.025)
        self.cell_w = (width - 2 * mx) // len(lanes)
        self.cell_h = (height - 2 * my) // self.rows
        self._x0 = (width - self.cell_w * len(lanes)) // 2
        self._y0 = (height - self.cell_h * self.rows) // 2
        self.item_px = int(min(self.cell_w, self.cell_h) * ITEM_FILL)
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        tex_rng = np.random.default_rng([seed, shelf, 7])
        self._background = self._draw_background(shelf_surface(width, height, tex_rng))
        self._background_f = self._background.astype(np.float32)
        self._noise = tex_rng.standard_normal((height + 32, width + 32, 3)).astype(np.float32)
        self._items: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._poses: dict[tuple[str, int, str, int], Placement] = {}
        self._layout = self._make_layout()

    def _draw_background(self, bg: np.ndarray) -> np.ndarray:
        for i in range(1, len(self._slots)):  # lane dividers
            x = self._x0 + i * self.cell_w
            cv2.line(bg, (x, self._y0), (x, self._y0 + self.rows * self.cell_h), (120, 124, 128), 3)
        y = self._y0 + self.rows * self.cell_h  # front lip with the price-tag rail
        cv2.rectangle(bg, (0, y + 2), (self.width, self.height), (95, 98, 100), -1)
        return bg

    def _make_layout(self) -> list[dict[str, Any]]:
        cells = []
        for lane_idx, slot_id in enumerate(self._slots):
            for pos in range(self.rows):
                cells.append({"slot_id": slot_id, "position": pos,
                              "x": self._x0 + lane_idx * self.cell_w,
                              "y": self._y0 + (self.rows - 1 - pos) * self.cell_h,
                              "w": self.cell_w, "h": self.cell_h})
        return cells

    def layout(self) -> list[dict[str, Any]]:
        """One dict per cell: {slot_id, position, x, y, w, h} in pixels — the recognizer's ROIs."""
        return [dict(c) for c in self._layout]

    def _item(self, sku_id: str) -> tuple[np.ndarray, np.ndarray]:
        got = self._items.get(sku_id)
        if got is None:
            art = self._art.get(sku_id)
            got = scaled_art(art, self.item_px) if art is not None else draw_item(appearance_for(sku_id), self.item_px)
            self._items[sku_id] = got
        return got

    def _placement(self, cell: dict[str, Any], sku_id: str, jitter_px: int) -> Placement:
        """Pose of `sku_id` in `cell`: a function of (seed, cell, sku), cached (it never changes)."""
        key = (cell["slot_id"], cell["position"], sku_id, int(jitter_px))
        if key not in self._poses:
            if len(self._poses) > 1024:
                self._poses.clear()
            crc = zlib.crc32(f"{key[0]}:{key[1]}:{sku_id}".encode())
            patch, alpha = self._item(sku_id)
            self._poses[key] = _pose(patch, alpha, cell["x"] + cell["w"] // 2, cell["y"] + cell["h"] // 2,
                                     np.random.default_rng([self._seed, self.shelf, crc]), jitter_px,
                                     self.width, self.height)
        return self._poses[key]

    def render(self, *, lighting: float = 1.0, noise: float = 4.0, occlusion: float = 0.0,
               jitter_px: int = 2, rng: np.random.Generator | None = None) -> np.ndarray:
        """The shelf as the camera sees it now: BGR uint8, height x width x 3.

        `lighting` is a global gain, `noise` the sensor noise sigma (grey levels), `occlusion`
        the largest fraction of a cell a hand may cover (about half the cells get a blob).
        Item rotation and offset (up to `jitter_px`) belong to the placement — they come from
        (renderer seed, cell, sku) — so an item that stays put looks the same in every frame and
        only the lanes a customer touched change; `rng` drives lighting noise and occlusion.
        """
        rng = self._rng if rng is None else rng
        snap = self.world.snapshot()
        canvas = self._background_f.copy()
        for cell in self._layout:
            items = snap.get(cell["slot_id"], [])
            if cell["position"] < len(items):
                _blend(canvas, self._placement(cell, items[cell["position"]], jitter_px))
        if occlusion > 0:
            for cell in self._layout:
                if rng.random() < 0.5:
                    _occlude(canvas, cell, float(rng.uniform(0.3, 1.0)) * occlusion, rng)
        canvas *= float(lighting)
        if noise > 0:
            oy, ox = (int(v) for v in rng.integers(0, 32, size=2))
            canvas += self._noise[oy:oy + self.height, ox:ox + self.width] * float(noise)
        return np.clip(canvas, 0, 255).astype(np.uint8)


def render_item(sku_id: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One package top view on shelf surface, size x size BGR uint8 — framed like a cell's square
    centre crop, so it can serve as a reference image for enrollment or training."""
    canvas = shelf_surface(size, size, rng).astype(np.float32)
    patch, alpha = draw_item(appearance_for(sku_id), int(size * ITEM_FILL))
    _blend(canvas, _pose(patch, alpha, size // 2, size // 2, rng, 2, size, size))
    canvas *= float(rng.uniform(0.85, 1.15))
    canvas += rng.standard_normal(canvas.shape).astype(np.float32) * 4.0
    return np.clip(canvas, 0, 255).astype(np.uint8)

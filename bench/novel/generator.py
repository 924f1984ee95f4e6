"""Never-seen products for the vision benchmark, drawn in a style of their own.

EVALUATION ONLY: nothing under vision_models/ may import this module, and no threshold is tuned on
it. The style deliberately differs from hw_sim's renderer: hexagons, ellipses, rounded squares and
pentagons instead of cans/bottles/pouches; diagonal or corner label panels; Hershey-font text;
chevrons and checkers; a wood/metal background; perspective, specular glare, blur, JPEG and a
finger-like occluder on some views.

A look-alike pair shares everything but one small mark (a dot/square/triangle about 12 % of the
package's side), as two flavours of one brand do.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("hexagon", "ellipse", "roundsq", "pentagon", "octagon", "tall_rect")
PANELS = ("diag_band", "corner", "ring", "top_half", "none")
DECOR = ("chevrons", "checker", "text", "wave", "dots")
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX,
         cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
CANVAS = 128  # designs are drawn at this size, then posed into the view
LETTERS = "ABCDEFGHKMNPRSTWXYZ0123456789"


@dataclass(frozen=True)
class Design:
    """One novel product. `mark` distinguishes look-alike partners (None on a plain product)."""

    sku_id: str
    seed: int
    partner: str | None = None
    mark: tuple[str, int, int, tuple[int, int, int]] | None = None  # kind, x, y, colour


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(80, 256), rng.integers(70, 256)]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _outline(shape: str, rng: np.random.Generator) -> np.ndarray:
    c, r = CANVAS / 2, CANVAS * 0.44
    if shape in ("hexagon", "pentagon", "octagon"):
        n = {"hexagon": 6, "pentagon": 5, "octagon": 8}[shape]
        a0 = rng.uniform(0, np.pi)
        ang = a0 + np.arange(n) * 2 * np.pi / n
        return np.stack([c + r * np.cos(ang), c + r * np.sin(ang)], 1).astype(np.int32)
    if shape == "ellipse":
        ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([c + r * np.cos(ang), c + r * 0.72 * np.sin(ang)], 1).astype(np.int32)
    if shape == "tall_rect":
        return np.array([[c - r * 0.55, c - r], [c + r * 0.55, c - r], [c + r * 0.55, c + r],
                         [c - r * 0.55, c + r]], np.int32)
    ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)  # rounded square (superellipse)
    x, y = np.cos(ang), np.sin(ang)
    return np.stack([c + r * np.sign(x) * np.abs(x) ** 0.4, c + r * np.sign(y) * np.abs(y) ** 0.4],
                    1).astype(np.int32)


def draw_design(d: Design) -> tuple[np.ndarray, np.ndarray]:
    """The package top view (CANVAS x CANVAS BGR float32) and its alpha mask (float32 0..1)."""
    rng = np.random.default_rng(d.seed)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    body, panel_c, deco_c = _color(rng), _color(rng), _color(rng)
    poly = _outline(shape, rng)
    mask = np.zeros((CANVAS, CANVAS), np.uint8)
    cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA)
    img = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    img[:] = body
    panel = PANELS[int(rng.integers(len(PANELS)))]
    if panel == "diag_band":
        off = int(rng.integers(-30, 30))
        pts = np.array([[0, 40 + off], [0, 75 + off], [CANVAS, 5 + off], [CANVAS, -30 + off]], np.int32)
        cv2.fillPoly(img, [pts], panel_c, cv2.LINE_AA)
    elif panel == "corner":
        cv2.rectangle(img, (0, 0), (int(rng.integers(50, 80)), int(rng.integers(50, 80))), panel_c, -1)
    elif panel == "ring":
        cv2.circle(img, (64, 64), int(rng.integers(24, 40)), panel_c, int(rng.integers(6, 14)), cv2.LINE_AA)
    elif panel == "top_half":
        cv2.rectangle(img, (0, 0), (CANVAS, int(rng.integers(45, 70))), panel_c, -1)
    deco = DECOR[int(rng.integers(len(DECOR)))]
    if deco == "chevrons":
        for k in range(int(rng.integers(2, 5))):
            y = 40 + 16 * k
            cv2.polylines(img, [np.array([[30, y], [64, y + 12], [98, y]], np.int32)], False, deco_c, 4,
                          cv2.LINE_AA)
    elif deco == "checker":
        step = int(rng.integers(10, 18))
        for i in range(0, CANVAS, step):
            for j in range(0, CANVAS, step):
                if (i // step + j // step) % 2 and 30 < i < 98 and 30 < j < 98:
                    img[i:i + step, j:j + step] = deco_c
    elif deco == "wave":
        xs = np.arange(20, 108)
        for k in range(2):
            ys = (60 + 14 * k + 8 * np.sin(xs / rng.uniform(5, 10))).astype(np.int32)
            cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, deco_c, 3, cv2.LINE_AA)
    elif deco == "dots":
        for _ in range(int(rng.integers(4, 9))):
            cv2.circle(img, (int(rng.integers(30, 98)), int(rng.integers(30, 98))), int(rng.integers(3, 7)),
                       deco_c, -1, cv2.LINE_AA)
    word = "".join(rng.choice(list(LETTERS), int(rng.integers(2, 5))))
    font = FONTS[int(rng.integers(len(FONTS)))]
    cv2.putText(img, word, (int(rng.integers(26, 40)), int(rng.integers(70, 92))), font,
                float(rng.uniform(0.8, 1.2)), deco_c if deco != "text" else panel_c, 2, cv2.LINE_AA)
    if deco == "text":
        cv2.putText(img, word[::-1], (34, 50), font, 0.7, deco_c, 2, cv2.LINE_AA)
    if d.mark is not None:
        kind, x, y, col = d.mark
        for c, t in (((20, 20, 20), 3), (col, 0)):  # dark rim, then the coloured mark inside
            if kind == "dot":
                cv2.circle(img, (x, y), 8 + t, c, -1, cv2.LINE_AA)
            elif kind == "square":
                cv2.rectangle(img, (x - 7 - t, y - 7 - t), (x + 7 + t, y + 7 + t), c, -1)
            else:
                tri = np.array([[x, y - 9 - t], [x - 9 - t, y + 7 + t], [x + 9 + t, y + 7 + t]], np.int32)
                cv2.fillPoly(img, [tri], c, cv2.LINE_AA)
    cv2.polylines(img, [poly], True, tuple(int(v * 0.6) for v in body), 2, cv2.LINE_AA)
    return img.astype(np.float32), (mask.astype(np.float32) / 255.0)


def make_catalogue(n_products: int = 48, n_pairs: int = 12, seed: int = 900_000) -> list[Design]:
    """`n_products` novel designs, the first 2*n_pairs forming look-alike pairs (one mark apart)."""
    if n_products < 2 * n_pairs:
        raise ValueError("need at least two products per look-alike pair")
    rng = np.random.default_rng(seed)
    out: list[Design] = []
    for p in range(n_pairs):
        s = int(rng.integers(1 << 30))
        kind = ("dot", "square", "triangle")[p % 3]
        x, y = int(rng.integers(34, 94)), int(rng.integers(34, 94))
        ca = _color(rng)
        cb = (255 - ca[0], 255 - ca[1], 255 - ca[2])  # the partner's mark: the complementary colour
        a, b = f"novel_{p:02d}a", f"novel_{p:02d}b"
        out.append(Design(a, s, b, (kind, x, y, ca)))
        out.append(Design(b, s, a, (kind, x, y, cb)))
    for i in range(n_products - 2 * n_pairs):
        out.append(Design(f"novel_{i + n_pairs:02d}", int(rng.integers(1 << 30))))
    return out


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(_color(rng), np.float32) * 0.35 + rng.uniform(60, 150)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if rng.random() < 0.5:  # wood grain
        grain = 12 * np.sin(xx / rng.uniform(2, 5) + 3 * np.sin(yy / rng.uniform(8, 20)))
    else:  # brushed metal
        grain = rng.standard_normal((size, 1)).astype(np.float32).repeat(size, 1) * 8
    return np.clip(base[None, None, :] + grain[..., None], 0, 255)


def render_view(d: Design, size: int, rng: np.random.Generator, *, hard: bool) -> np.ndarray:
    """One size x size BGR uint8 view of the product, centred like a cell crop.

    `hard=False` is a reference shot (mild pose/light changes); `hard=True` a shelf read: stronger
    perspective, glare, blur, JPEG, and on 25 % of views a finger over up to 20 % of the package.
    """
    patch, alpha = draw_design(d)
    canvas = _background(size, rng)
    fill = rng.uniform(0.72, 0.9) if hard else rng.uniform(0.78, 0.86)
    k = size * fill / CANVAS
    ang = rng.uniform(-180, 180) if hard else rng.uniform(-15, 15)
    m = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), ang, k)
    jit = size * (0.06 if hard else 0.03)
    m[:, 2] += (size / 2 - CANVAS / 2) + rng.uniform(-jit, jit, 2)
    persp = 0.08 if hard else 0.03
    src = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
    dst = src + rng.uniform(-persp, persp, (4, 2)).astype(np.float32) * size
    h3 = cv2.getPerspectiveTransform(src, dst) @ np.vstack([m, [0, 0, 1]])
    wp = cv2.warpPerspective(patch, h3, (size, size), flags=cv2.INTER_LINEAR)
    wa = cv2.warpPerspective(alpha, h3, (size, size), flags=cv2.INTER_LINEAR)[..., None]
    shadow = cv2.GaussianBlur(wa, (0, 0), size * 0.04)
    if shadow.ndim == 2:
        shadow = shadow[..., None]
    canvas = canvas * (1 - 0.35 * shadow)
    canvas = canvas * (1 - wa) + wp * wa
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    g = rng.uniform(-0.3, 0.3, 2) if hard else rng.uniform(-0.1, 0.1, 2)
    light = rng.uniform(0.7, 1.3) if hard else rng.uniform(0.9, 1.1)
    canvas = canvas * (light + g[0] * (xx - 0.5) + g[1] * (yy - 0.5))[..., None]
    if hard and rng.random() < 0.5:  # specular glare
        cx, cy = rng.uniform(0.2, 0.8, 2)
        r = rng.uniform(0.06, 0.15)
        glare = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))
        canvas = canvas + (rng.uniform(60, 140) * glare)[..., None]
    if hard and rng.random() < 0.25:  # a finger from the edge
        side = rng.uniform(0, 2 * np.pi)
        ex, ey = size / 2 + np.cos(side) * size * 0.7, size / 2 + np.sin(side) * size * 0.7
        reach = rng.uniform(0.15, 0.3) * size
        tx, ty = size / 2 + np.cos(side) * reach, size / 2 + np.sin(side) * reach
        skin = np.array([rng.uniform(90, 160), rng.uniform(120, 180), rng.uniform(170, 230)], np.float32)
        finger = np.zeros((size, size), np.uint8)
        cv2.line(finger, (int(ex), int(ey)), (int(tx), int(ty)), 255, max(2, int(size * 0.12)), cv2.LINE_AA)
        fa = finger.astype(np.float32)[..., None] / 255
        canvas = canvas * (1 - fa) + skin * fa
    if hard:
        s = rng.uniform(0, 1.2)
        if s > 0.3:
            canvas = cv2.GaussianBlur(canvas, (0, 0), s)
    canvas = canvas + rng.standard_normal(canvas.shape).astype(np.float32) * (rng.uniform(2, 8) if hard else 2)
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    if hard:
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 90))])
        if ok:
            out = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return out

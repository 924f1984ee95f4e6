"""Procedurally generated product designs for metric learning (domain randomization).

Each class is a random package design: outline (circle, ellipse, rectangle, rounded rectangle,
3-8 sided polygon), body colour, label panels, stripes, text in a random Hershey font, a logo
(star, ring, cross, triangle); half the classes come in look-alike pairs that differ only in one
small mark: its colour, its shape, its presence, a short printed word, or its place (`_twin_marks`).
The mark always lies inside the package and the two variants always differ visibly, so no pair is
two labels for one picture (label noise that teaches the embedding to chase pixel noise). Each
view varies pose, scale, lighting, background, glare, hands, blur, noise and JPEG, so the
embedding must learn *the design*, not one renderer's look. Nothing here is used for
evaluation (the novel-product bench has its own generator, which this module never imports).
"""

from __future__ import annotations

import cv2
import numpy as np

from vision_models.train import styles

_S = 96  # design canvas
CAMERA_PX = 64  # a shelf camera cell's side (640x480: 76 px cells; the novel bench draws 64 px views)
_FONTS = (0, 1, 2, 3, 4, 6, 7)


def _col(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _design(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    d: dict = {"seed": seed, "shape": int(rng.integers(6)), "body": _col(rng),
               "nside": int(rng.integers(3, 9)), "aspect": float(rng.uniform(0.55, 1.0)),
               "ops": []}
    for _ in range(int(rng.integers(2, 6))):
        kind = int(rng.integers(7))
        d["ops"].append((kind, _col(rng), rng.uniform(0, 1, 6), int(rng.integers(1 << 20))))
    return d


def _pattern(size: int, kind: int, period: float, angle: float, duty: float) -> np.ndarray:
    """A boolean periodic pattern: 0 stripes, 1 grid, 2 dot lattice (angle in radians)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    a = np.sin(2 * np.pi * u / period)
    t = duty * 1.2 - 0.6
    if kind == 0:
        return a > t
    b = np.sin(2 * np.pi * v / period)
    if kind == 1:
        return (a > t) | (b > t)
    return (a * b) > 0.3 + duty * 0.5


def _draw(d: dict, mark: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((_S, _S, 3), np.uint8)
    img[:] = d["body"].astype(np.uint8)
    c, r = _S / 2, _S * 0.45
    mask = np.zeros((_S, _S), np.uint8)
    sh = d["shape"]
    if sh == 0:
        cv2.circle(mask, (int(c), int(c)), int(r), 255, -1, cv2.LINE_AA)
    elif sh == 1:
        cv2.ellipse(mask, (int(c), int(c)), (int(r), int(r * d["aspect"])), 0, 0, 360, 255, -1, cv2.LINE_AA)
    elif sh in (2, 3):
        w = int(r * d["aspect"])
        cv2.rectangle(mask, (int(c - w), int(c - r)), (int(c + w), int(c + r)), 255, -1)
        if sh == 3:
            mask = cv2.GaussianBlur(mask, (0, 0), 5)
            mask = np.where(mask > 127, 255, 0).astype(np.uint8)
    else:
        ang = np.arange(d["nside"]) * 2 * np.pi / d["nside"] + d["seed"] % 7
        pts = np.stack([c + r * np.cos(ang), c + r * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
    for kind, col, u, s in d["ops"]:
        p = (u * _S).astype(int)
        col_t = tuple(float(v) for v in col)
        if kind == 0:  # stripes
            for k in range(1 + s % 4):
                y = int(p[0] * 0.6 + 20 + k * (6 + s % 9))
                cv2.line(img, (0, y), (_S, y + int(p[1] * 0.4) - 19), col_t, 2 + s % 5)
        elif kind == 1:  # panel
            cv2.rectangle(img, (p[0] // 2, p[1] // 2), (p[0] // 2 + 20 + p[2] // 2, p[1] // 2 + 15 + p[3] // 3), col_t, -1)
        elif kind == 2:  # text
            word = "".join(chr(65 + (s >> (3 * i)) % 26) for i in range(2 + s % 4))
            cv2.putText(img, word, (10 + p[0] // 3, 30 + p[1] // 2), _FONTS[s % len(_FONTS)],
                        0.5 + u[2] * 0.8, col_t, 1 + s % 3, cv2.LINE_AA)
        elif kind == 3:  # logo: ring / star / cross / triangle
            x, y, rr = 25 + p[0] // 2, 25 + p[1] // 2, 6 + p[2] // 10
            if s % 4 == 0:
                cv2.circle(img, (x, y), rr, col_t, 3, cv2.LINE_AA)
            elif s % 4 == 1:
                a = np.arange(10) * np.pi / 5
                rad = np.where(np.arange(10) % 2 == 0, rr, rr / 2.2)
                cv2.fillPoly(img, [np.stack([x + rad * np.cos(a), y + rad * np.sin(a)], 1).astype(np.int32)], col_t)
            elif s % 4 == 2:
                cv2.line(img, (x - rr, y), (x + rr, y), col_t, 4)
                cv2.line(img, (x, y - rr), (x, y + rr), col_t, 4)
            else:
                cv2.fillPoly(img, [np.array([[x, y - rr], [x - rr, y + rr], [x + rr, y + rr]], np.int32)], col_t)
        elif kind == 4:  # blob / gradient wash
            cv2.circle(img, (p[0], p[1]), 10 + p[2] // 3, col_t, -1, cv2.LINE_AA)
        elif kind == 5:  # periodic pattern (stripes at any angle, grid, dot lattice) in a region
            region = np.zeros((_S, _S), np.uint8)
            if s % 2:
                cv2.ellipse(region, (p[0], p[1]), (12 + p[2] // 3, 12 + p[3] // 3), float(u[4] * 180), 0, 360, 255, -1)
            else:
                cv2.rectangle(region, (p[0] // 2, p[1] // 2), (p[0] // 2 + 25 + p[2] // 2, p[1] // 2 + 25 + p[3] // 2), 255, -1)
            on = _pattern(_S, (s >> 4) % 3, 4 + (s >> 6) % 10, u[4] * np.pi, u[5]) & (region > 0)
            img[on] = np.asarray(col_t, np.float32).astype(np.uint8)
        else:  # label panel at a random angle
            box = cv2.boxPoints(((float(p[0]), float(p[1])), (20.0 + p[2] / 2, 10.0 + p[3] / 3), float(u[4] * 180)))
            cv2.fillPoly(img, [box.astype(np.int32)], col_t, cv2.LINE_AA)
    return _marked(img.astype(np.float32), mark), mask.astype(np.float32) / 255


def _marked(img: np.ndarray, mark: tuple | None) -> np.ndarray:
    """A drawn design (float32) with `mark` added (none: the design itself)."""
    if mark is None:
        return img
    out = img.astype(np.uint8)
    _draw_mark(out, mark)
    return out.astype(np.float32)


MARK_KINDS = ("dot", "square", "triangle", "ring", "word")


def _draw_mark(img: np.ndarray, mark: tuple) -> None:
    """(x, y, colour, kind, radius, rim, word): a small mark, optionally with a dark rim."""
    x, y, col, kind, r, rim, word = mark
    layers = (((20.0, 20.0, 20.0), 2), (col, 0)) if rim else ((col, 0),)
    for c, t in layers:
        if kind == "dot":
            cv2.circle(img, (x, y), r + t, c, -1, cv2.LINE_AA)
        elif kind == "square":
            cv2.rectangle(img, (x - r - t, y - r - t), (x + r + t, y + r + t), c, -1)
        elif kind == "triangle":
            tri = np.array([[x, y - r - 2 - t], [x - r - 2 - t, y + r + t], [x + r + 2 + t, y + r + t]], np.int32)
            cv2.fillPoly(img, [tri], c, cv2.LINE_AA)
        elif kind == "ring":
            cv2.circle(img, (x, y), r + 1, c, 3 + t, cv2.LINE_AA)
        else:  # a short bold word centred on (x, y)
            (w, h), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_DUPLEX, 0.55, 2)
            cv2.putText(img, word, (x - w // 2, y + h // 2), cv2.FONT_HERSHEY_DUPLEX, 0.55, c, 2 + t, cv2.LINE_AA)


def _far_colour(rng: np.random.Generator, *avoid: np.ndarray, dist: float = 110.0) -> np.ndarray:
    """A random colour at least `dist` (RGB distance) from each of `avoid` (a visible difference)."""
    for _ in range(200):
        c = _col(rng)
        if all(float(np.linalg.norm(c - a)) >= dist for a in avoid):
            return c
    return (255.0 - avoid[0]).astype(np.float32)  # the complement is as far as it gets


def _inside(mask: np.ndarray, rng: np.random.Generator, margin: int) -> tuple[int, int]:
    """A point of the package at least `margin` px from its outline."""
    core = cv2.erode(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    ys, xs = np.nonzero(core[20:76, 20:76])
    if len(xs) == 0:
        return _S // 2, _S // 2
    i = int(rng.integers(len(xs)))
    return int(xs[i]) + 20, int(ys[i]) + 20


def _word(rng: np.random.Generator) -> str:
    return "".join(chr(65 + int(rng.integers(26))) for _ in range(2))


def _twin_marks(d: dict, mask: np.ndarray, rng: np.random.Generator) -> tuple[tuple, tuple | None]:
    """The marks of a look-alike pair: the same design, one visible small difference.

    colour (40 %): one mark in two clearly different colours; shape (20 %): one colour, two
    kinds; presence (15 %): a mark on one only; word (10 %): two different short words; place
    (15 %): one mark, moved across the package. The mark sits inside the outline (never off the
    package) and contrasts with the body colour. `mask`: the design's outline, as `_draw` returns it."""
    m8 = (mask * 255).astype(np.uint8)
    r = int(rng.integers(5, 8))
    x, y = _inside(m8, rng, r + 4)
    kind = MARK_KINDS[int(rng.integers(4))]
    rim = bool(rng.random() < 0.5)
    col = _far_colour(rng, d["body"])
    word = _word(rng)
    base = (x, y, tuple(map(float, col)), kind, r, rim, word)
    u = rng.random()
    if u < 0.4:
        other = _far_colour(rng, d["body"], col)
        return base, (x, y, tuple(map(float, other)), kind, r, rim, word)
    if u < 0.6:
        kind2 = MARK_KINDS[(MARK_KINDS.index(kind) + 1 + int(rng.integers(3))) % 4]
        return base, (x, y, base[2], kind2, r, rim, word)
    if u < 0.75:
        return base, None
    if u < 0.85:
        other_word = word
        while other_word[0] == word[0] or other_word[1] == word[1]:
            other_word = _word(rng)
        return (x, y, base[2], "word", r, rim, word), (x, y, base[2], "word", r, rim, other_word)
    for _ in range(50):
        x2, y2 = _inside(m8, rng, r + 4)
        if abs(x2 - x) + abs(y2 - y) >= 24:
            return base, (x2, y2, base[2], kind, r, rim, word)
    return base, None


def _view(img: np.ndarray, alpha: np.ndarray, out: int, rng: np.random.Generator, clean: bool = False,
          broad: bool = False) -> np.ndarray:
    """One view of a design. `clean`: an enrollment shot as an operator takes it (package alone,
    roughly upright, even light; no hand, glare or JPEG), not a shelf read. `broad`: a shelf read
    also gets `styles.shelf_extras` (neighbour, shadow, door reflection, haze, motion blur)."""
    s = out * 2
    bg = np.empty((s, s, 3), np.float32)
    bg[:] = _col(rng) * rng.uniform(0.3, 1.0)
    if rng.random() < 0.5:
        bg += rng.standard_normal((s, 1, 1)).astype(np.float32) * rng.uniform(0, 20)
    if rng.random() < 0.3:
        bg += rng.standard_normal((1, s, 1)).astype(np.float32) * rng.uniform(0, 20)
    if rng.random() < 0.4:  # textured surface (periodic, grainy or streaky)
        tex = _pattern(s, int(rng.integers(3)), rng.uniform(3, 14), rng.uniform(0, np.pi), rng.uniform(0.2, 0.8))
        grain = cv2.GaussianBlur(rng.standard_normal((s, s)).astype(np.float32), (0, 0), rng.uniform(0.5, 3))
        bg += ((tex - 0.5) * rng.uniform(0, 50) + grain * rng.uniform(0, 40))[..., None]
    k = s * (rng.uniform(0.75, 0.9) if clean else rng.uniform(0.6, 0.95)) / _S
    m = cv2.getRotationMatrix2D((_S / 2, _S / 2), rng.uniform(-20, 20) if clean else rng.uniform(-180, 180), k)
    m[:, 2] += s / 2 - _S / 2 + rng.uniform(-0.08, 0.08, 2) * s * (0.4 if clean else 1.0)
    src = np.float32([[0, 0], [s, 0], [s, s], [0, s]])
    h = cv2.getPerspectiveTransform(src, src + rng.uniform(-0.1, 0.1, (4, 2)).astype(np.float32) * s * (0.3 if clean else 1.0))
    h = h @ np.vstack([m, [0, 0, 1]])
    wp = cv2.warpPerspective(img, h, (s, s))
    wa = cv2.warpPerspective(alpha, h, (s, s))[..., None]
    canvas = bg * (1 - rng.uniform(0, 0.5) * cv2.GaussianBlur(wa, (0, 0), 3)[..., None]) * (1 - wa) + wp * wa
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    g = rng.uniform(-0.4, 0.4, 2) * (0.25 if clean else 1.0)
    gain = rng.uniform(0.9, 1.1) if clean else rng.uniform(0.55, 1.45)
    canvas *= (gain + g[0] * (xx - 0.5) + g[1] * (yy - 0.5))[..., None]
    canvas *= rng.uniform(0.85, 1.15, 3).astype(np.float32)  # white balance
    if clean:
        v = np.clip(canvas + rng.standard_normal(canvas.shape).astype(np.float32) * 2, 0, 255).astype(np.uint8)
        return cv2.resize(v, (out, out), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        cx, cy, rr = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.2)
        canvas += (rng.uniform(40, 180) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rr * rr)))[..., None]
    if rng.random() < 0.35:  # hand / finger / other occluder
        a = rng.uniform(0, 2 * np.pi)
        e = (int(s / 2 + np.cos(a) * s), int(s / 2 + np.sin(a) * s))
        t = rng.uniform(0.1, 0.35) * s
        tip = (int(s / 2 + np.cos(a) * t), int(s / 2 + np.sin(a) * t))
        occ = np.zeros((s, s), np.uint8)
        cv2.line(occ, e, tip, 255, int(rng.uniform(0.08, 0.25) * s), cv2.LINE_AA)
        oa = occ.astype(np.float32)[..., None] / 255
        skin = np.array([rng.uniform(60, 170), rng.uniform(90, 190), rng.uniform(120, 240)], np.float32)
        canvas = canvas * (1 - oa) + skin * oa
    if broad:
        canvas = styles.shelf_extras(canvas, rng)
    sig = rng.uniform(0, 1.6)
    if sig > 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sig)
    canvas += rng.standard_normal(canvas.shape).astype(np.float32) * rng.uniform(0, 10)
    v = np.clip(canvas, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, enc = cv2.imencode(".jpg", v, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        v = cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else v
    return cv2.resize(v, (out, out), interpolation=cv2.INTER_AREA)


def _at_size(v: np.ndarray, size: int) -> np.ndarray:
    return v if v.shape[0] == size else cv2.resize(v, (size, size), interpolation=cv2.INTER_AREA)


STYLES = ("flat", "broad", "mixed")


def _looks(d: dict, pair: bool, broad: bool, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The drawn package(s) of design `d`: one, or a look-alike pair differing in one mark
    (`_twin_marks`, drawn from `rng`). `broad`: restyled before the mark and finished after it
    with one Generator for both twins, so they still differ only in the mark."""
    img, alpha = _draw(d, None)
    srng = np.random.default_rng(d["seed"] ^ 0x5EED5)
    if broad:
        img, alpha = styles.restyle(img, alpha, d["body"], srng)
    marks: list[tuple | None] = list(_twin_marks(d, alpha, rng)) if pair else [None]
    looks = [(_marked(img, m), alpha) for m in marks]
    if broad:
        fin = int(srng.integers(1 << 40))
        looks = [styles.finish(im, al, np.random.default_rng(fin)) for im, al in looks]
    return looks


def generate(classes: int, views: int, size: int, seed: int,
             clean_views: int = 0, style: str = "flat") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`views` crops (size x size BGR uint8) of each of `classes` random designs; the first
    `clean_views` of each class are enrollment shots (`_view(clean=True)`), the rest shelf reads.

    A view is drawn at no more than `CAMERA_PX` and resized to `size` the way the recognizer
    resizes a cell (INTER_AREA): a 96 px model sees the detail a camera cell has, upscaled, never
    finer print than it will meet.

    Returns (x, y, partner): class k's look-alike twin is partner[k] (-1 if none); classes come
    in pairs (2i, 2i+1) for the first half, sharing the design and differing in one small mark
    (`_twin_marks`).

    `style`: "flat" draws as this module always has (same seed, same pixels); "broad" passes every
    design and shelf view through `styles` (other outlines, gradients, small print, barcodes,
    photos, shading, crinkles; neighbours, reflections, haze); "mixed" draws half the designs each
    way.
    """
    x, y, partner, _ = _generate(classes, views, size, seed, clean_views, style, paired=False)
    return x, y, partner


MARK_PIXEL_DIFF = 24  # a pixel shows the twins' mark difference when they differ by more than this (of 255)


def generate_twin_aware(classes: int, views: int, size: int, seed: int, clean_views: int = 0,
                        style: str = "flat") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`generate`'s designs, but each view of a look-alike pair is drawn twice under the same
    nuisance (pose, light, glare, hand, blur, noise, JPEG), once per twin, so the views of a pair
    differ in the mark alone; and how much of the mark each view still shows.

    Returns (x, y, partner, visible): visible[i] in [0, 1] is view i's count of pixels where the two
    twins' views differ (by more than `MARK_PIXEL_DIFF`), over that count in the pair's first clean
    view (or, without clean views, its largest over the views): near 0 when a hand, glare or blur
    hides the mark, so that no picture could tell the twins apart. 1 for single designs. Used by
    training (`episodic --twin-aware`) only; `generate` (calibration, held-out checks) is unchanged."""
    return _generate(classes, views, size, seed, clean_views, style, paired=True)


def _generate(classes: int, views: int, size: int, seed: int, clean_views: int, style: str,
              paired: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`generate` (`paired` False: every view of every design drawn in turn from one stream) and
    `generate_twin_aware` (`paired`: view v of both twins drawn from the same stream state)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")
    rng = np.random.default_rng(seed)
    x = np.empty((classes * views, size, size, 3), np.uint8)
    y = np.repeat(np.arange(classes), views)
    partner = np.full(classes, -1)
    visible = np.ones(classes * views, np.float32)
    k = 0
    while k < classes:
        d = _design(int(rng.integers(1 << 40)))
        broad = style == "broad" or (style == "mixed" and d["seed"] % 2 == 1)
        pair = k + 1 < classes and k < classes // 2
        looks = _looks(d, pair, broad, rng)
        if pair:
            partner[k], partner[k + 1] = k + 1, k
        order = ([(v, j) for v in range(views) for j in range(len(looks))] if paired
                 else [(v, j) for j in range(len(looks)) for v in range(views)])
        for v, j in order:
            r = rng
            if paired and j == 0:
                state = rng.bit_generator.state  # view v of the other twin starts where this one did
            elif paired:
                r = np.random.default_rng()
                r.bit_generator.state = state
            view = _view(looks[j][0], looks[j][1], min(size, CAMERA_PX), r, clean=v < clean_views, broad=broad)
            x[(k + j) * views + v] = _at_size(view, size)
        if paired and pair:
            a, b = (x[i * views:(i + 1) * views].astype(np.int16) for i in (k, k + 1))
            shown = np.count_nonzero(np.abs(a - b).max(axis=3) > MARK_PIXEL_DIFF, axis=(1, 2)).astype(np.float64)
            ref = shown[0] if clean_views > 0 else shown.max()
            visible[k * views:(k + 2) * views] = np.tile(np.minimum(shown / max(ref, 1.0), 1.0), 2)
        k += len(looks)
    return x, y, partner, visible

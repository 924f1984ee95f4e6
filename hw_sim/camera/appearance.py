"""What each product's packaging looks like from above: a data table keyed by sku id.

Look-alike pairs share body colour and shape and differ only in an accent (cola/cola_zero,
yogurt_straw/yogurt_van, tea_peach/tea_lemon, crisps_salt/crisps_paprika), so the recognizer has
to look at the label, as it would on a real shelf. An unknown sku id gets a deterministic
appearance derived from a hash of its id, so enrolling a brand-new product in tests works.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

BGR = tuple[int, int, int]

SHAPES = ("can", "rect", "bottle", "pouch")
PATTERNS = ("stripes", "dot", "band", "text")

LOOKALIKE_PAIRS: tuple[tuple[str, str], ...] = (
    ("cola", "cola_zero"),
    ("yogurt_straw", "yogurt_van"),
    ("tea_peach", "tea_lemon"),
    ("crisps_salt", "crisps_paprika"),
)


@dataclass(frozen=True)
class Appearance:
    """Top view of one package.

    `size` is the package's footprint as (width, height) fractions of the item box; `cap` is the
    cap/lid colour (bottles and cans); `pattern` is drawn in `accent` inside the shape.
    """

    shape: str
    body: BGR
    accent: BGR
    pattern: str
    size: tuple[float, float] = (1.0, 1.0)
    cap: BGR | None = None


_RED, _WHITE, _BLACK = (40, 30, 200), (235, 235, 235), (25, 25, 25)
_AMBER = (40, 120, 190)
_BROWN = (30, 60, 110)
_YELLOW_BAG = (40, 200, 235)

APPEARANCES: dict[str, Appearance] = {
    "cola": Appearance("can", _RED, _WHITE, "band", cap=(190, 190, 190)),
    "cola_zero": Appearance("can", _RED, _BLACK, "band", cap=(190, 190, 190)),
    "orange": Appearance("can", (20, 130, 250), (40, 160, 40), "dot", cap=(190, 190, 190)),
    "lemon": Appearance("can", (40, 225, 240), (40, 160, 40), "dot", cap=(190, 190, 190)),
    "energy": Appearance("can", (120, 40, 20), (200, 200, 200), "stripes", cap=(150, 150, 150)),
    "water": Appearance("bottle", (230, 210, 170), (200, 120, 30), "band", cap=(200, 90, 20)),
    "water_sp": Appearance("bottle", (230, 210, 170), (60, 170, 60), "stripes", cap=(60, 170, 60)),
    "tea_peach": Appearance("bottle", _AMBER, (120, 150, 250), "band", cap=(235, 235, 235)),
    "tea_lemon": Appearance("bottle", _AMBER, (40, 230, 240), "band", cap=(235, 235, 235)),
    "juice_apple": Appearance("can", (60, 200, 130), (40, 40, 200), "dot", cap=(190, 190, 190)),
    "sandwich_ham": Appearance("rect", (215, 225, 230), (150, 120, 230), "text", size=(0.95, 0.7)),
    "sandwich_veg": Appearance("rect", (215, 225, 230), (60, 170, 70), "text", size=(0.95, 0.7)),
    "wrap": Appearance("rect", (150, 200, 225), (30, 110, 220), "stripes", size=(1.0, 0.5)),
    "salad": Appearance("can", (90, 170, 90), (50, 50, 210), "dot", size=(1.05, 1.05), cap=(220, 230, 220)),
    "milk": Appearance("rect", (245, 245, 245), (190, 100, 30), "band", size=(0.75, 0.75)),
    "yogurt_straw": Appearance("can", (240, 240, 240), (150, 90, 240), "dot", size=(0.85, 0.85)),
    "yogurt_van": Appearance("can", (240, 240, 240), (120, 200, 230), "dot", size=(0.85, 0.85)),
    "choc_bar": Appearance("rect", _BROWN, (50, 190, 230), "text", size=(1.0, 0.42)),
    "choc_nuts": Appearance("rect", _BROWN, (40, 40, 200), "text", size=(1.0, 0.42)),
    "crisps_salt": Appearance("pouch", _YELLOW_BAG, (180, 80, 20), "band", size=(0.9, 1.0)),
    "crisps_paprika": Appearance("pouch", _YELLOW_BAG, (30, 30, 190), "band", size=(0.9, 1.0)),
    "cookies": Appearance("rect", (90, 150, 200), (30, 60, 90), "dot", size=(0.9, 0.9)),
    "gum": Appearance("rect", (240, 240, 240), (80, 180, 60), "stripes", size=(0.6, 0.4)),
    "protein": Appearance("rect", _BLACK, (20, 140, 250), "band", size=(1.0, 0.45)),
}

_SIZES: dict[str, tuple[tuple[float, float], ...]] = {
    "can": ((1.0, 1.0), (0.85, 0.85)),
    "bottle": ((1.0, 1.0),),
    "rect": ((0.95, 0.7), (1.0, 0.45), (0.8, 0.8)),
    "pouch": ((0.9, 1.0),),
}


def _colour(b: bytes) -> BGR:
    """A saturated-enough colour from three hash bytes (avoids the grey of the shelf surface)."""
    c = [40 + (x * 200) // 255 for x in b[:3]]
    if max(c) - min(c) < 60:  # too grey: push one channel down
        c[b[3] % 3] = 30
    return (c[0], c[1], c[2])


def appearance_for(sku_id: str) -> Appearance:
    """The packaging of `sku_id`; unknown ids get a stable appearance derived from their hash."""
    known = APPEARANCES.get(sku_id)
    if known is not None:
        return known
    h = hashlib.sha256(sku_id.encode("utf-8")).digest()
    shape = SHAPES[h[0] % len(SHAPES)]
    sizes = _SIZES[shape]
    cap = _colour(h[10:14]) if shape in ("can", "bottle") else None
    return Appearance(shape=shape, body=_colour(h[1:5]), accent=_colour(h[5:9]),
                      pattern=PATTERNS[h[9] % len(PATTERNS)], size=sizes[h[14] % len(sizes)], cap=cap)

"""Calibrate the recognizer's doubt on never-trained randomized designs; write it to the card.

    python -m vision_models.train.calibrate_doubt --model-dir vision_models/models/shelf-v2

Draws `--classes` + `--unknown` procedurally generated designs (vision_models.train.randomized, a
seed no training run uses): each of the first `--classes` is enrolled through `Recognizer.enroll`
from 3 *clean* views (an operator's reference shots: upright-ish, even light, no hand), and
`--tests` shelf reads of every design are recognized (the `--unknown` ones were never enrolled: the
open-set check). A read competes with one machine's products, not with every design drawn: the
designs are dealt into galleries of `--gallery-size` (look-alike twins together), each enrolled on
top of the model's seed gallery and read on its own. Then, in this order:

1. `max_spread_ratio`: how far from its SKU's enrollment views a right read may lie, in units of
   their own distance (`CellDetection.spread_ratio`, `vision_models.pairs.spread_distance`); the
   95th percentile over the right reads, so the per-SKU gate alone doubts <= 5 % of them.
2. `min_margin`, `ratio_weight`, `min_pair_z` and `min_pair_separation`: a read whose best-vs-second cosine margin is below
   `min_margin` gets a second look (`second_look_below` = `min_margin`; its 90/270 degree views
   zoomed in by `--second-look-zoom`, written as `second_look_zoom`) and the pair check between
   its two nearest products (`vision_models.pairs`, ridge `--pair-shrink`). A read is trusted when
   its lead (the margin + `ratio_weight` x log(the runner-up's spread ratio / the label's),
   `CellDetection.lead`) reaches `min_margin` or the check is sure (|z| >= `min_pair_z`, of a pair
   it separates by at least `min_pair_separation`, `PAIR_SEPARATIONS`; closer pairs get no verdict).
   Of all (margin, weight, z, separation) whose wrong-but-trusted reads stay at or below `--target` of all reads, and
   whose margin sends at most `--max-second-look` of the reads to a second look (what it costs at
   door close), the one that doubts the fewest right reads.
3. Open set: while more than `--unknown-target` of the never-enrolled designs' reads would be
   trusted (read as an enrolled product without doubt), the ratio's excess over 1 shrinks by 2 % and
   step 2 repeats.
4. Steps 1-3 for each gain of `--margin-gains` (default `RATIO_MARGIN_GAINS`: 0 alone): the
   open-set check judges the spread ratio x exp(-gain x margin) (a read much nearer its label than
   any other product may lie further from the label's views); the gain whose gates doubt the fewest
   right reads is kept as `ratio_margin_gain`.

Cards before 2.5.0 had `radius_slack` instead (a cosine below the SKU's radius); the Recognizer still
reads them.

The novel-product bench is never used here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vision_models.augment import VIEWS_PER_IMAGE
from vision_models.recognizer import CARD_FILE, Recognizer, rival_log_ratio
from vision_models.train.randomized import STYLES, generate
from vision_models.types import CellDetection, CellRoi

CALIB_SEED = 424_242
DRAW_STRIDE = 101_010  # draw d of a pooled calibration is drawn at CALIB_SEED + d x this (525252, ...)
REFS = 3
PAIR_SHRINK = 10.0  # in pooled features (2.4.0), chosen on held-out designs: ridge 3 / 10 / 30 (docs/vision.md)
Z_STEP, Z_FLOOR = 0.1, 0.5  # |z| bars are multiples of Z_STEP, at least Z_FLOOR
# floors of the pair check's `separation` searched by default (`Recognizer.min_pair_separation`: a
# pair closer than this gets no verdict); `--pair-separations 0,2,2.5,3,3.5,4` searches more. On
# 2.7.1's draw 424242 the twins whose mark is a two-letter word (too small to read at 64 px: 69 %
# top-1) sit at separation 2.1-3.6 and were 20 of the 30 wrong reads with |z| >= 3: a floor of 3 let
# the bar fall 5.5 -> 4.1 and doubted 17.3 % instead of 21.2 %; on draw 525252 those gates trusted 19
# wrong reads of 12,000 where 2.7.1's trust 15, and that draw's own search keeps no floor
# (docs/vision.md, "Where the wrong tail comes from"): not searched by default
PAIR_SEPARATIONS = (0.0,)
# weights of log(runner-up's spread ratio / the label's) in a read's lead (`CellDetection.lead`); on
# held-out designs 0.1-0.2 doubted 2-4.5 points fewer right reads than the margin alone (docs/vision.md)
RATIO_WEIGHTS = (0.0, 0.05, 0.1, 0.2)
# the second look's 90/270 degree views zoomed in this much (`augment.quarter_turns`); on held-out
# twins the pair check read 90.8 / 91.8 % right with plain turns, 91.4 / 92.6 % with 1.2 (docs/vision.md)
SECOND_LOOK_ZOOM = 1.2
# at most this share of reads gets a second look (min_margin = second_look_below is capped by it): a
# shelf camera's 30 cells cost ~1.5 ms each plus ~3.5 ms each looked one, and 4 cameras on the
# daemon's 2 inference threads must leave door close -> order within 300 ms (docs/vision.md). 0.3
# since 2.7.1: in galleries of 60, 0.5 let the margin rise to 0.41 and look at ~half the reads, ~30 ms
# more door close -> order with never-seen products for no fewer doubts than 0.3 (novel seed 7)
MAX_SECOND_LOOK = 0.3
# gains of the margin in the open-set check searched by default (`Recognizer.ratio_margin_gain`: the
# spread ratio x exp(-gain x margin)); `--margin-gains 0,1,2,4,8` searches more. On 600 calibration
# designs (2.7.0) 1-8 doubted 1.5-2 points fewer right reads and 8 was kept; on the novel bench it
# trusted 3.5 % of never-enrolled products' reads (seeds 1-5; gain 0: 1.2 %), which 40 calibration
# designs never enrolled cannot bound (docs/vision.md, 2.7.1): not searched by default
RATIO_MARGIN_GAINS = (0.0,)
# designs per gallery: a read competes with the products one machine knows, not with every design
# drawn. A large smart fridge stocks 20-60 products (the daemon narrows a cell to the planogram's):
# 60, plus the shipped seed's labels, is the crowded end of that. Look-alike twins share a gallery.
GALLERY_SIZE = 60


def read_views(rec: Recognizer, views: np.ndarray, second_look: float) -> list[CellDetection]:
    """Recognize every view as one cell (100 cells side by side per frame), second look below
    `second_look` (0: never, 9: every read)."""
    rec.second_look_below = second_look
    size = views.shape[1]
    dets: list[CellDetection] = []
    for i in range(0, len(views), 100):
        chunk = views[i:i + 100]
        frame = np.ascontiguousarray(np.concatenate(list(chunk), axis=1))
        dets += rec.recognize(frame, [CellRoi("C", j, j * size, 0, size, size) for j in range(len(chunk))])
    return dets


def gallery_groups(partner: np.ndarray, enrolled: int, size: int) -> np.ndarray:
    """The gallery of each design (index into ceil(`enrolled` / `size`) galleries): look-alike twins
    (`partner`) together, pairs and single designs dealt out in turn so every gallery gets its share
    of both; designs from `enrolled` on (never enrolled) are dealt out the same way."""
    count = max(1, -(-enrolled // max(1, size)))
    group = np.empty(len(partner), np.int64)
    units = [k for k in range(len(partner)) if not 0 <= partner[k] < k]  # a single, or a pair's first
    for i, k in enumerate(units):
        group[k] = i % count
        if partner[k] >= 0:
            group[partner[k]] = i % count
    return group


def read_in_galleries(rec: Recognizer, views: np.ndarray, refs: int, enrolled: int, group: np.ndarray,
                      names: Sequence[str], second_looks: Sequence[float]) -> list[list[CellDetection]]:
    """Each gallery of `group` in turn: the designs below `enrolled` in it are enrolled (as `names`)
    from their first `refs` views into a copy of `rec`'s gallery, and every design's other views are
    read against it, once per `second_looks` value (`read_views`). Reads come back in design order;
    `rec` keeps its own gallery."""
    seed, per = rec.gallery, views.shape[1] - refs
    out: list[list[CellDetection | None]] = [[None] * (len(views) * per) for _ in second_looks]
    try:
        for g in np.unique(group):
            rec.use_gallery(seed.copy())
            members = np.flatnonzero(group == g)
            for k in members[members < enrolled]:
                rec.enroll(names[k], list(views[k, :refs]))
            reads = views[members, refs:].reshape(-1, *views.shape[2:])
            at = (members[:, None] * per + np.arange(per)).ravel()
            for j, look in enumerate(second_looks):
                for i, det in zip(at, read_views(rec, reads, look), strict=True):
                    out[j][i] = det
    finally:
        rec.use_gallery(seed)
    return [[d for d in dets if d is not None] for dets in out]


def read_columns(dets: list[CellDetection]) -> dict[str, np.ndarray]:
    """The figures of each read the gate search judges (label, similarity, margin, |z|, pair
    separation, spread ratio and the runner-up's log ratio), one array each."""
    return {"label": np.array([d.label for d in dets]), "sim": np.array([d.similarity for d in dets]),
            "margin": np.array([d.margin for d in dets]), "z": np.array([d.pair_z for d in dets]),
            "sep": np.array([d.pair_separation for d in dets]),
            "ratio": np.array([d.spread_ratio for d in dets]),
            "rival": rival_log_ratio(np.array([d.spread_ratio for d in dets]), np.array([d.runner_up_ratio for d in dets]))}


class Reads(NamedTuple):
    """The calibration reads: without (`first`) and with (`again`) a second look (`read_columns`), each
    read's true label, and whether its design was enrolled."""
    first: dict[str, np.ndarray]
    again: dict[str, np.ndarray]
    truth: np.ndarray
    known: np.ndarray


def draw_seed(draw: int) -> int:
    """The seed of calibration draw `draw` (0: `CALIB_SEED`)."""
    return CALIB_SEED + draw * DRAW_STRIDE


def calibration_reads(rec: Recognizer, *, classes: int, unknown: int, tests: int,
                      gallery_size: int = GALLERY_SIZE, style: str = "flat", draw: int = 0) -> Reads:
    """`tests` shelf reads of each of `classes` + `unknown` designs drawn at `CALIB_SEED` (+ `draw` x
    `DRAW_STRIDE`) in `style` (`randomized.generate`), the first `classes` enrolled from `REFS`
    clean views, `gallery_size` designs per gallery (`read_in_galleries`)."""
    total = classes + unknown
    x, _, partner = generate(total, REFS + tests, rec.size, draw_seed(draw), clean_views=REFS,
                             style=style)
    views = x.reshape(total, REFS + tests, *x.shape[1:])
    names = [f"calib_{k}" if draw == 0 else f"calib{draw}_{k}" for k in range(total)]
    first, again = map(read_columns, read_in_galleries(rec, views, REFS, classes, gallery_groups(partner, classes, gallery_size),
                                                   names, (0.0, 9.0)))
    return Reads(first, again, np.repeat(names, tests), np.repeat(np.arange(total) < classes, tests))


def pooled(draws: Sequence[Reads]) -> Reads:
    """Several calibration draws as one set of reads (names differ between draws)."""
    def cat(cols: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
    return Reads(cat([r.first for r in draws]), cat([r.again for r in draws]),
                 np.concatenate([r.truth for r in draws]), np.concatenate([r.known for r in draws]))


def calibrate(rec: Recognizer, *, classes: int, unknown: int, tests: int, target: float,
              unknown_target: float = 0.01, pair_shrink: float | None = PAIR_SHRINK,
              second_look_zoom: float = SECOND_LOOK_ZOOM, max_second_look: float = MAX_SECOND_LOOK,
              gallery_size: int = GALLERY_SIZE, gains: Sequence[float] = RATIO_MARGIN_GAINS,
              separations: Sequence[float] = PAIR_SEPARATIONS,
              style: str = "flat", draws: int = 1) -> dict[str, Any]:
    """The doubt section for `rec`'s card (`rec`'s own gallery is left as it was). `pair_shrink`
    None: no pair check (a read below the margin is never trusted). `max_second_look`: the largest
    share of the calibration reads the margin may send to a second look. `gallery_size`: designs
    enrolled per gallery (`read_in_galleries`), each on top of `rec`'s gallery. `style`: the
    generator's drawing style (calibrate on what the model was trained on). `draws`: that many
    draws of `classes` + `unknown` designs at different seeds, pooled (`pooled`): the gates then rest
    on a tail of `draws` times as many wrong reads."""
    rec.pair_shrink, rec.second_look_zoom = pair_shrink, second_look_zoom
    rec.min_pair_separation = 0.0  # every pair's verdict read; the floor is chosen on them
    reads = pooled([calibration_reads(rec, classes=classes, unknown=unknown, tests=tests, gallery_size=gallery_size,
                                      style=style, draw=d) for d in range(draws)])
    doubt = choose_gates(reads, min_quality=rec.min_quality, target=target, unknown_target=unknown_target,
                         pair_check=pair_shrink is not None, max_second_look=max_second_look, gains=gains,
                         separations=separations)
    pair: dict[str, float] = {} if pair_shrink is None else {"pair_shrink": pair_shrink}
    if pair and "min_pair_z" in doubt:
        pair["min_pair_z"] = doubt.pop("min_pair_z")
        pair["min_pair_separation"] = doubt.pop("min_pair_separation")
    calibration = doubt.pop("calibration")
    return {"min_quality": rec.min_quality, **doubt, "second_look_zoom": second_look_zoom, **pair,
            "note": "open-set gate per SKU (a read's distance from its enrollment views, in units of their own, "
                    "x exp(-ratio_margin_gain x its margin), at most max_spread_ratio) and margin gate (the "
                    "margin plus ratio_weight x log(the runner-up's spread ratio / the label's) at least "
                    "min_margin); a read with margin below "
                    "second_look_below gets a second look first, then the pair check between its two nearest "
                    "products (trusted from |z| >= min_pair_z, for pairs it separates by at least "
                    "min_pair_separation); calibrated on training-generator designs only",
            "calibration": {"classes": classes, "unknown_classes": unknown, "draws": draws, "reads": int(reads.known.sum()),
                            "seed": CALIB_SEED, "seeds": [draw_seed(d) for d in range(draws)],
                            "gallery_size": gallery_size, "style": style,
                            "refs": f"{REFS} clean views per design, each embedded as {VIEWS_PER_IMAGE} enrollment views",
                            **calibration, "target_wrong_trusted": target, "target_unknown_trusted": unknown_target,
                            "max_second_look": max_second_look}}


def discounted(reads: Reads, gain: float) -> Reads:
    """`reads` with each measured spread ratio x exp(-`gain` x its margin), as the open-set check of a
    card with `ratio_margin_gain` judges it (`Recognizer.recognize`)."""
    def one(col: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        r = col["ratio"]
        return {**col, "ratio": np.where(r >= 0, r * np.exp(-gain * np.maximum(col["margin"], 0)), r)}
    return reads._replace(first=one(reads.first), again=one(reads.again))


def z_bar(wrong_z: np.ndarray, spare: int) -> float:
    """The lowest |z| bar (a multiple of `Z_STEP`, at least `Z_FLOOR`) that trusts at most `spare` of
    the wrong reads' |z| `wrong_z`. Unbounded above: a wrong read far out costs the check its lowest
    bars, not the check itself (a grid that stopped at 12 turned it off, docs/vision.md)."""
    if len(wrong_z) <= spare:
        return Z_FLOOR
    worst = float(np.sort(wrong_z)[::-1][spare])  # the highest |z| that must fall below the bar
    return float(max(Z_FLOOR, round((np.floor(round(worst / Z_STEP, 6)) + 1) * Z_STEP, 2)))


def choose_gates(reads: Reads, *, min_quality: float, target: float, unknown_target: float, pair_check: bool,
                 max_second_look: float, gains: Sequence[float] = RATIO_MARGIN_GAINS,
                 separations: Sequence[float] = PAIR_SEPARATIONS) -> dict[str, Any]:
    """The gates (module doc, steps 1-4) that doubt the fewest right reads of `reads` while wrong-but-
    trusted reads stay within `target` (of the enrolled designs' reads) and never-enrolled designs'
    reads within `unknown_target`: {min_margin, second_look_below, max_spread_ratio, ratio_weight,
    ratio_margin_gain, min_pair_z and min_pair_separation (when some |z| may trust; the floor one of
    `separations`), calibration: the figures}. Of equally good gains, the smallest."""
    found = [{**_gates(discounted(reads, g), min_quality=min_quality, target=target, unknown_target=unknown_target,
                       pair_check=pair_check, max_second_look=max_second_look, separations=separations),
                "ratio_margin_gain": g}
             for g in sorted(gains)]
    return min(found, key=lambda d: d["calibration"]["doubted_correct_rate"])


def _gates(reads: Reads, *, min_quality: float, target: float, unknown_target: float, pair_check: bool,
           max_second_look: float, separations: Sequence[float]) -> dict[str, Any]:
    """`choose_gates` at one gain (`reads` discounted by it)."""
    first, again, truth, known = reads
    ok1 = (first["label"] == truth) & known
    n = int(known.sum())

    def verdict(floor: float) -> np.ndarray:
        """The pair check's |z| of every read (second look), 0 for pairs separated less than `floor`."""
        return np.where(again.get("sep", np.inf) >= floor, again["z"], 0.0)

    def outcome(t: float, limit: float, zmin: float, w: float, band: float | None = None,
                floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        use = first["margin"] < (t if band is None else band)  # a second look below the band (default: t)
        lab = np.where(use, again["label"], first["label"])
        sim, ratio = np.where(use, again["sim"], first["sim"]), np.where(use, again["ratio"], first["ratio"])
        lead = np.where(use, again["margin"] + w * again["rival"], first["margin"] + w * first["rival"])
        z = np.where(use, verdict(floor), 0.0)
        # the open-set gate (`Recognizer._quality`): a spread ratio up to `limit`; labels without a
        # spread (the shipped seed) by their plain similarity
        near = np.where(ratio >= 0, ratio <= limit, sim >= min_quality)
        trusted = ((lead >= t) | (z >= zmin)) & near
        return lab == truth, trusted

    looked = first["margin"][known]
    margins = [float(t) for t in np.round(np.arange(0.0, 0.6, 0.005), 3) if np.mean(looked < t) <= max_second_look]

    def gates_for(limit: float) -> tuple[float, float, float, float]:
        """(min_margin, min_pair_z, ratio_weight, min_pair_separation) keeping wrong-but-trusted <=
        target that doubt the fewest right reads."""
        best, fewest = (1.0, float("inf"), 0.0, 0.0), n + 1
        for w, t in ((w, float(t)) for w in RATIO_WEIGHTS for t in margins):
            ok, by_margin = outcome(t, limit, float("inf"), w)
            spare = target * n - np.sum(by_margin & ~ok & known)
            if spare < 0:
                continue
            # the wrong reads the pair check would judge: not trusted by their lead, inside the open-set
            # gate (every |z| trusted: only that gate is left) and given a second look at this margin (a
            # read with margin >= t whose lead a ratio weight pulls below t gets no verdict at runtime)
            _, near = outcome(t, limit, 0.0, w)
            judged = near & ~by_margin & (first["margin"] < t) & ~ok & known
            for floor in sorted(separations) if pair_check else (0.0,):
                # the bar over them
                zmin = z_bar(verdict(floor)[judged], int(spare)) if pair_check else float("inf")
                _, trusted = outcome(t, limit, zmin, w, floor=floor)
                doubted = int(np.sum(~trusted & ok & known))
                if doubted < fewest:
                    best, fewest = (t, zmin, w, floor), doubted
        return best

    # the most lenient spread ratio whose gate alone doubts <= 5 % of right reads (95th percentile;
    # starting at the 97.5th-100th doubted no fewer on 600 designs, 2.7.0), tightened in steps of 2 %
    # (of its excess over 1) until never-enrolled designs are trusted on at most `unknown_target` of
    # their reads
    ratios = first["ratio"][ok1 & (first["ratio"] >= 0)]
    limit = max(float(np.round(np.percentile(ratios, 95), 3)), 1.01) if ratios.size else 1.01
    best, zmin, weight, floor = gates_for(limit)
    while ((~known).any() and limit > 1.01
           and np.mean(outcome(best, limit, zmin, weight, floor=floor)[1][~known]) > unknown_target):
        limit = max(round(1 + (limit - 1) * 0.98, 3), 1.01)
        best, zmin, weight, floor = gates_for(limit)
    band = min(best, margins[-1])  # when no margin keeps the target (best 1.0: trust none by it), the widest allowed
    ok, trusted = outcome(best, limit, zmin, weight, band, floor)
    ok_k = ok & known
    out: dict[str, Any] = {"min_margin": best, "second_look_below": band, "max_spread_ratio": limit,
                           "ratio_weight": weight}
    if np.isfinite(zmin):
        out["min_pair_z"], out["min_pair_separation"] = zmin, floor
    out["calibration"] = {"top1": round(float(ok_k.sum() / n), 4),
                          "second_look_share": round(float(np.mean(looked < band)), 4),
                          "wrong_trusted_rate": round(float(np.sum(trusted & ~ok & known)) / n, 4),
                          "doubted_correct_rate": round(float(np.sum(~trusted & ok_k)) / max(1, ok_k.sum()), 4),
                          "unknown_trusted_rate": round(float(np.mean(trusted[~known])), 4) if (~known).any() else None}
    return out


def _floats(text: str) -> list[float]:
    """A comma-separated list of numbers, as the search options take it ("0,1,2")."""
    return [float(x) for x in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.calibrate_doubt")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--classes", type=int, default=600,
                   help="enrolled designs (600: the 0.1 %% wrong-trusted target then rests on ~12 wrong reads, not ~4)")
    p.add_argument("--unknown", type=int, default=40, help="designs never enrolled (open-set check)")
    p.add_argument("--tests", type=int, default=20)
    p.add_argument("--target", type=float, default=0.001, help="wrong-but-trusted reads, of all reads")
    p.add_argument("--unknown-target", type=float, default=0.01, help="trusted reads of never-enrolled designs")
    p.add_argument("--pair-shrink", type=float, default=PAIR_SHRINK, help="ridge of the pair check (0: none)")
    p.add_argument("--max-second-look", type=float, default=MAX_SECOND_LOOK,
                   help="largest share of reads the margin may send to a second look (its cost)")
    p.add_argument("--pair-separations", type=_floats,
                   default=list(PAIR_SEPARATIONS),
                   help="floors of the pair check's separation to search, e.g. 0,2,2.5,3,3.5,4 (default: 0)")
    p.add_argument("--margin-gains", type=_floats, default=list(RATIO_MARGIN_GAINS),
                   help="gains of the margin in the open-set check to search, e.g. 0,1,2,4,8 (default: 0)")
    p.add_argument("--gallery-size", type=int, default=GALLERY_SIZE,
                   help="designs enrolled per gallery: a read competes with one machine's products")
    p.add_argument("--second-look-zoom", type=float, default=SECOND_LOOK_ZOOM,
                   help="zoom of the second look's 90/270 degree views (1: plain quarter turns)")
    p.add_argument("--draws", type=int, default=1,
                   help="pool this many draws of --classes + --unknown designs (seeds 424242, 525252, ...)")
    p.add_argument("--style", choices=STYLES, default="flat",
                   help="drawing style of the calibration designs (the one the model was trained on)")
    a = p.parse_args(argv)
    rec = Recognizer.load(a.model_dir)
    doubt = calibrate(rec, classes=a.classes, unknown=a.unknown, tests=a.tests, target=a.target,
                      unknown_target=a.unknown_target, pair_shrink=a.pair_shrink or None,
                      second_look_zoom=a.second_look_zoom, max_second_look=a.max_second_look,
                      gallery_size=a.gallery_size, gains=a.margin_gains, separations=a.pair_separations,
                      style=a.style,
                      draws=a.draws)
    card_path = a.model_dir / CARD_FILE
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["doubt"] = doubt
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(doubt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How the cells of changed lanes may be read, and those readings, lane by lane (pure; edge.core.fusion).

`alternatives` gives each cell its plausible labels with a cost, `priced` weighs in the lane's own
product. A reading picks one label for every cell that has alternatives. What it means for the decision
depends only on each lane's net count per SKU (before minus after): two readings that differ in
*which* of a lane's cells they flip, but not in how many to what, remove the same items and make
the same moves. So each lane's cells are folded into its distinct net effects, each with the
cheapest way to reach it, and only the lanes are combined. Enumerating cell by cell (2^cells) ran
into the reading cap as soon as two look-alike lanes changed together (their cells flip between
the twins at low margins in both frames), and the cells left out of the cap kept a label no
reading could correct.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

from edge.core.fusion_types import EMPTY, CellObs, FusionParams

Option = tuple[str, float]  # (label, cost of reading the cell so)
LaneCell = tuple[int, str, Sequence[Option]]  # (+1 before / -1 after, top label, options incl. the default at cost 0)
Effect = tuple[tuple[str, int], ...]  # sorted (sku, change of the lane's before-minus-after count)


def lane_effects(cells: Sequence[LaneCell], bound: float) -> list[tuple[float, Effect]]:
    """Every net effect the cells of one lane can have, with its cheapest cost, cheapest first;
    effects costing more than `bound` are dropped ("empty" counts nothing, as in the lane counts)."""
    states: dict[Effect, float] = {(): 0.0}
    for sign, top, options in cells:
        nxt: dict[Effect, float] = {}
        for effect, cost in states.items():
            for label, c in options:
                total = cost + c
                if total > bound:
                    continue
                e = effect if label == top else _add(effect, ((top, -sign), (label, sign)))
                if total < nxt.get(e, float("inf")):
                    nxt[e] = total
        states = nxt
    return sorted(((c, e) for e, c in states.items()), key=lambda ce: (ce[0], ce[1]))


def combine(lanes: Mapping[str, list[tuple[float, Effect]]], cap: int) -> Iterator[tuple[float, list[tuple[str, Effect]]]]:
    """Readings across lanes: (cost, [(slot, effect)]). At most `cap` of them: the lanes that can
    change most cheaply keep the most options, and every lane keeps at least its cheapest one."""
    order = sorted(lanes, key=lambda s: (lanes[s][1][0] if len(lanes[s]) > 1 else float("inf"), s))
    kept: list[tuple[str, list[tuple[float, Effect]]]] = []
    combos = 1
    for slot in order:
        n = max(1, min(len(lanes[slot]), cap // combos))
        kept.append((slot, lanes[slot][:n]))
        combos *= n
    for choice in itertools.product(*(opts for _, opts in kept)):
        yield sum(c for c, _ in choice), [(slot, e) for (slot, _), (_, e) in zip(kept, choice, strict=True)]


def _add(effect: Effect, changes: Sequence[tuple[str, int]]) -> Effect:
    d = dict(effect)
    for sku, n in changes:
        if sku != EMPTY:
            d[sku] = d.get(sku, 0) + n
    return tuple(sorted((s, n) for s, n in d.items() if n))


Alt = tuple[int, CellObs, list[tuple[str, float]]]  # (sign: +1 before / -1 after, cell, [(label, cost)])


def alternatives(before: Mapping[tuple[str, int], CellObs], after: Mapping[tuple[str, int], CellObs],
                 changed: set[str], params: FusionParams, *, scale: bool = True) -> list[Alt]:
    """Other plausible labels of cells in changed lanes: the runner-up of a low-margin cell, or the
    product runner-up of an unsettled one (cost = margin, at most `uncertain_margin`), and, for a cell whose label differs between the
    frames, the other frame's label (cost `misread_cost`: a hand or glare made one frame wrong). A
    cell that *defers* to the other frame's view of it (`defers`) is read as that view by default;
    its own label, its runner-up and "empty" stay possible at about `doubtful_cost`, so the scale
    can still overrule. Without a scale (`scale` False) nothing could overrule: a poor view (doubtful
    or not, "empty" too) is then only cheaper to call a misread (`doubtful_cost`), which keeps the
    margin low and sends the basket to review. A package seen poorly in the after frame where the
    before frame saw bare shelf may also be any product that clearly left its cell (`doubtful_cost`):
    an item carried to another lane under a hand is then a move, which the scale confirms or not.
    Default reading first (cost 0); `priced` then weighs
    in the lane's own product, and `lane_effects` / `combine` fold and combine the readings."""
    alts: list[Alt] = []
    left = _left(before, after, params) if scale else set()
    for sign, cells, other in ((1, before, after), (-1, after, before)):
        for key, c in cells.items():
            if c.slot_id not in changed:
                continue
            oc = other.get(key)
            o = label_of(oc)
            # a package where the other frame saw bare shelf: maybe one carried from a cell it left
            carried = left - {c.label} if sign < 0 and o == EMPTY and oc is not None and c.label != EMPTY else set()
            if scale and oc is not None and defers(c, oc, params):
                doubt = {c.runner_up: params.doubtful_cost + max(0.0, c.margin)}  # dearer than its own label
                doubt |= {EMPTY: params.doubtful_cost, c.label: params.doubtful_cost}
                doubt |= {lab: params.doubtful_cost for lab in carried}
                alts.append((sign, c, [(o, 0.0), *((lab, cost) for lab, cost in doubt.items() if lab != o)]))
                continue
            opts: dict[str, float] = {}
            if c.runner_up != c.label and (c.margin < params.uncertain_margin or (not c.settled and c.runner_up != EMPTY)):
                opts[c.runner_up] = min(max(0.0, c.margin), params.uncertain_margin)
            if o != c.label and not (oc is not None and defers(oc, c, params)):
                clear = oc is not None and min(c.quality, oc.quality) >= params.clear_quality and c.settled and oc.settled
                cost = params.clear_misread_cost if clear else params.misread_cost
                if not scale and c.quality < params.min_quality:
                    cost = params.doubtful_cost
                opts[o] = min(opts.get(o, cost), cost)
            for lab in carried if doubtful(c, params) else ():  # a poor view only: a clear one names it
                opts[lab] = min(opts.get(lab, params.doubtful_cost), params.doubtful_cost)
            if opts:
                alts.append((sign, c, [(c.label, 0.0), *sorted(opts.items(), key=lambda kv: kv[1])]))
    return alts


def _left(before: Mapping[tuple[str, int], CellObs], after: Mapping[tuple[str, int], CellObs],
          params: FusionParams) -> set[str]:
    """The products seen in cells that are clearly bare in the after frame: what left its place."""
    return {c.label for key, c in before.items()
            if c.label != EMPTY and (a := after.get(key)) is not None and a.label == EMPTY and not doubtful(a, params)}


def priced(c: CellObs, opts: list[tuple[str, float]], home: str, foreign: float) -> list[tuple[str, float]]:
    """The lane's own product is the likelier name: any other costs `foreign` more (someone would have
    moved it there: `FusionParams.foreign_cost`, or `pure_foreign_cost` in a lane known to hold only its
    own product), except the default of a cell whose view is believed (a settled read, or the other
    frame's view it defers to): a clearly seen stranger is a misplaced item."""
    believed = opts[0][0] if c.settled or opts[0][0] != c.label else None
    priced = [(lab, cost + (foreign if lab not in (home, EMPTY, believed) else 0.0)) for lab, cost in opts]
    low = min(cost for _, cost in priced)
    return [(lab, cost - low) for lab, cost in priced]


def label_of(c: CellObs | None) -> str:
    """A cell's label; "empty" for a cell the frame does not have."""
    return EMPTY if c is None else c.label


def doubtful(c: CellObs, params: FusionParams) -> bool:
    """A poor view (a hand, glare): a product read below `min_quality`, an "empty" read below
    `min_empty_quality` (a hand over a package can make it look like bare shelf, weakly)."""
    if c.label == EMPTY:
        return c.quality < params.min_empty_quality
    return c.quality < params.min_quality


def defers(c: CellObs, oc: CellObs, params: FusionParams) -> bool:
    """Whether `c` gives way to `oc`, the other frame's view of the same cell. A poor view gives way
    to a good one; but a package seen poorly still says a package is there, so it gives way to a
    good "empty" only when it barely looks like a package at all. A package whose name is unsure
    (not settled: a look-alike) on a good view gives way to a settled good view of another package."""
    if oc.label == c.label or doubtful(oc, params):
        return False
    if doubtful(c, params):
        return oc.label != EMPTY or c.quality < params.min_empty_quality
    return not c.settled and c.label != EMPTY and oc.label != EMPTY and oc.settled

"""Lanes without a prototype (issue 13; `ShelfObservation.no_prototype`): their cells are ignored and
their SKUs are in every hypothesis at no vision cost, so the weight less what vision saw elsewhere
decides them; two such lanes explaining one delta tie, a residual of no whole count fits nothing (both:
review). Vision cannot name an unknown product, yet it sees whether its lanes changed: lanes seen
filled and unchanged leave their SKU out of the hypotheses, and a charge on the scale's word must show
as that many cells emptied there. Otherwise a take vision missed on another lane of the shelf, of the
same weight, would be billed as the unknown product - a wrong charge. On such lanes only filled / empty
counts (an unknown package gets whichever known name is nearest, and two frames may guess differently),
and an empty read counts only when sure (quality): a package read as "empty" on a poor likeness must not
hide a take. Pure: no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from edge.core.catalog import Planogram


class _Cell(Protocol):  # fusion.CellObs (frozen: read-only members)
    @property
    def slot_id(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def quality(self) -> float: ...


def blind_lanes(planogram: Planogram, shelf: int, no_prototype: Iterable[str]) -> dict[str, str]:
    """The shelf's lanes without a prototype: slot id -> SKU."""
    wanted = set(no_prototype)
    return {s.slot_id: s.sku_id for s in planogram.slots_on_shelf(shelf) if s.slot_id in wanted}


def untouched(before: Iterable[_Cell], after: Iterable[_Cell], lanes: Mapping[str, str], empty: str,
              *, sure_empty: float | None = None) -> set[str]:
    """SKUs of `lanes` (slot id -> SKU) whose cells the cameras saw filled and unchanged between the frames.
    A lane read empty throughout is not among them: the camera may simply not see that product.
    With `sure_empty` (lanes without a prototype) only filled / empty is compared, and a lane with an empty
    read below that quality is not provably unchanged."""
    seen: dict[str, list[dict[tuple[str, int], str]]] = {sku: [{}, {}] for sku in lanes.values()}
    for i, cells in enumerate((before, after)):
        for c in cells:
            if c.slot_id in lanes:
                seen[lanes[c.slot_id]][i][(c.slot_id, c.position)] = \
                    c.label if sure_empty is None else _occupancy(c, empty, sure_empty)
    return {sku for sku, (b, a) in seen.items()
            if b and b == a and any(v != empty for v in b.values()) and "?" not in b.values()}


def _occupancy(c: _Cell, empty: str, sure: float) -> str:
    return "filled" if c.label != empty else empty if c.quality >= sure else "?"


def unseen_takes(before: Iterable[_Cell], after: Iterable[_Cell], lanes: Mapping[str, str],
                 taken: Mapping[str, int], empty: str, sure_empty: float) -> list[str]:
    """Review reasons, one per SKU of the no-prototype `lanes` (slot id -> SKU) charged more times than
    its lanes' cells were surely emptied between the frames; [] when every such charge was seen."""
    emptied: Counter[str] = Counter()
    for sign, cells in ((1, before), (-1, after)):
        for c in cells:
            if c.slot_id in lanes and (c.label != empty or (sign < 0 and c.quality < sure_empty)):
                emptied[lanes[c.slot_id]] += sign
    return [f"no_prototype_unseen:{sku}" for sku in sorted(set(lanes.values()))
            if taken.get(sku, 0) > max(emptied[sku], 0)]


def unseen_extras(before: Iterable[_Cell], after: Iterable[_Cell], lanes: Mapping[str, str],
                  charged: Mapping[str, int], seen: Mapping[str, int], empty: str) -> list[str]:
    """Review reasons for SKUs the scale adds to what the cameras saw taken (`charged` beyond `seen`)
    while every lane of that SKU (`lanes`: the shelf's slot id -> SKU) was seen filled and unchanged:
    the grams belong to a take the cameras missed elsewhere, and a look-alike weight must not name it."""
    still = untouched(before, after, lanes, empty)
    return [f"unseen_take:{sku}" for sku in sorted(charged) if charged[sku] > seen.get(sku, 0) and sku in still]

"""Lanes and a take-and-go session: which lanes its products left, which may now hold another product."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from edge.core.catalog import Planogram
from edge.core.fusion import EMPTY, FusionParams
from edge.core.fusion_readings import doubtful
from edge.services.evidence import cells_from_json


def no_prototype_lanes(data: Mapping[str, Any], planogram: Planogram) -> set[str]:
    """Lanes whose SKU had no prototype during the session (`data["no_prototype"]`, see `_note_missing`)."""
    missing = set(data.get("no_prototype", ()))
    return {s.slot_id for s in planogram.slots.values() if s.shelf is not None and s.sku_id in missing}


def lane_drops(data: Mapping[str, Any], taken: Mapping[str, int], planogram: Planogram) -> dict[tuple[str, str], int]:
    """Attribute each taken SKU to the lanes it visibly left (else its home lanes): {(slot, sku): n}.
    A lane without a prototype shows no visible drop (its cells name other products)."""
    blind = no_prototype_lanes(data, planogram)
    drop: Counter[tuple[str, str]] = Counter()
    for k, before in data.get("before", {}).items():
        b, a = cells_from_json(before), cells_from_json(data.get("after", {}).get(k, before))
        if b.cells is None or a.cells is None:
            continue
        cb = Counter((c.slot_id, c.label) for c in b.cells)
        ca = Counter((c.slot_id, c.label) for c in a.cells)
        for key, n in cb.items():
            if n > ca.get(key, 0) and key[0] not in blind:
                drop[key] = n - ca.get(key, 0)
    out: Counter[tuple[str, str]] = Counter()
    for sku, n in taken.items():
        for (slot, label), d in sorted(drop.items()):
            if label == sku and n > 0:
                use = min(n, d)
                out[(slot, sku)] += use
                n -= use
        homes = [sl.slot_id for sl in planogram.slots.values() if sl.sku_id == sku and sl.shelf is not None]
        if n > 0:
            out[(homes[0] if homes else next(iter(planogram.slots)), sku)] += n
    return dict(out)


def mixed_lanes(data: Mapping[str, Any], moves: Iterable[tuple[str, str, str]], review: bool,
                planogram: Planogram, params: FusionParams = FusionParams()) -> set[str]:
    """Lanes that may hold a product not their own after the session, until a technician restocks
    them (`repo.set_mixed`): where fusion moved an item to; where a package appeared in a cell the
    before frame saw bare (a put-back: whatever fusion made of it, a look-alike may be what went in);
    where a cell clearly changed its product (a good view on both sides, one of them a settled name);
    every lane where a package was seen in a cell that held another or none, when the session went
    to review; every lane the cameras could not see (camera down, no prototype). Not: a take; a
    cell whose look-alike name flips between two unsure reads (the same package read twice); a
    package seen poorly where the shelf was bare (a hand over it: had a package been put there,
    fusion moved it there or sent the session to review)."""
    blind = no_prototype_lanes(data, planogram)
    out = {dst for _sku, _src, dst in moves}
    for shelf in data.get("shelves", ()):
        lanes = {s.slot_id for s in planogram.slots_on_shelf(shelf)}
        b = cells_from_json(data.get("before", {}).get(str(shelf), {"shelf": shelf}))
        a = cells_from_json(data.get("after", {}).get(str(shelf), {"shelf": shelf}))
        if b.cells is None or a.cells is None:
            out |= lanes
            continue
        out |= lanes & blind
        before = {(c.slot_id, c.position): c for c in b.cells}
        for c in a.cells:
            was = before.get((c.slot_id, c.position))
            if was is None or c.label == was.label or c.label == EMPTY:
                continue  # a take puts nothing in
            if review or (not doubtful(c, params) and (was.label == EMPTY or (
                    (c.settled or was.settled) and not doubtful(was, params)))):
                out.add(c.slot_id)
    return out & shelf_lanes(planogram)


def shelf_lanes(planogram: Planogram) -> set[str]:
    """The take-and-go lanes (slots on a camera shelf)."""
    return {s.slot_id for s in planogram.slots.values() if s.shelf is not None}

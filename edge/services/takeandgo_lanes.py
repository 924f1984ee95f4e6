"""Which lanes a take-and-go session's products left: the cells before and after the door, per lane."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from edge.core.catalog import Planogram
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

"""Look-alikes the machine cannot part: two products the cameras can hardly tell apart
(`vision_models.lookalike`) stocked on one take-and-go shelf at weights the shelf's scale cannot
tell apart either (within their summed tolerances, as fusion matches a weight). A session that takes
one of them from that shelf goes to review unless the camera happens to be sure. The operator is
told when enrolling, on the Products page and by ``vendedge product list``: move one of the two to
another shelf (there the scale tells which shelf lost it), or enroll both from sharper views of the
mark that differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge.core.catalog import Planogram


def camera_skus(planogram: Planogram | None) -> dict[int, set[str]]:
    """{shelf: SKUs of its lanes} for take-and-go shelves."""
    out: dict[int, set[str]] = {}
    for slot in planogram.slots.values() if planogram else ():
        if slot.shelf is not None:
            out.setdefault(slot.shelf, set()).add(slot.sku_id)
    return out


def on_shelves(
    planogram: Planogram | None, sku_id: str, alikes: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`alikes` (`ProductGallery.look_alikes`) each with where the planogram puts the two:
    `shared_shelves` (camera shelves stocking both), `same_weight` (their weights within the summed
    tolerances; None when either is not in the catalogue) and `cannot_part` (both: neither camera nor
    scale can tell which was taken)."""
    per_shelf = camera_skus(planogram)
    skus = planogram.skus if planogram else {}
    out = []
    for alike in alikes:
        other = str(alike["sku_id"])
        shared = sorted(shelf for shelf, stocked in per_shelf.items() if {sku_id, other} <= stocked)
        a, b = skus.get(sku_id), skus.get(other)
        same = None if a is None or b is None else abs(a.weight_g - b.weight_g) <= a.weight_tol_g + b.weight_tol_g
        out.append({**alike, "shared_shelves": shared, "same_weight": same, "cannot_part": bool(shared) and bool(same)})
    return out

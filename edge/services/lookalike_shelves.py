"""Look-alikes the machine cannot part: two products the cameras can hardly tell apart
(`vision_models.lookalike`) stocked on one take-and-go shelf at weights the shelf's scale cannot
tell apart either (within their summed tolerances, as fusion matches a weight). A session that takes
one of them from that shelf goes to review unless the camera happens to be sure. The operator is
told when enrolling, on the Products page and by ``vendedge product list``: move one of the two to
another shelf (there the scale tells which shelf lost it), or enroll both from sharper views of the
mark that differs. Fleets watch alarms rather than pages: while any such pair is stocked, ONE alarm
(`ALARM_KEY`) lists them (`sync_alarm`; re-raised when the list changes, cleared when none is left).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from edge.core.catalog import Planogram
from edge.ledger import repo
from edge.ledger.db import LedgerDB

log = structlog.get_logger(__name__)

ALARM_KEY = "vision_lookalikes_unparted"


def camera_skus(planogram: Planogram | None) -> dict[int, set[str]]:
    """{shelf: SKUs of its lanes} for take-and-go shelves."""
    out: dict[int, set[str]] = {}
    for slot in planogram.slots.values() if planogram else ():
        if slot.shelf is not None:
            out.setdefault(slot.shelf, set()).add(slot.sku_id)
    return out


def on_shelves(
    planogram: Planogram | None, sku_id: str, alikes: Sequence[Mapping[str, Any]],
    per_shelf: Mapping[int, set[str]] | None = None,
) -> list[dict[str, Any]]:
    """`alikes` (`ProductGallery.look_alikes`) each with where the planogram puts the two:
    `shared_shelves` (camera shelves stocking both), `same_weight` (their weights within the summed
    tolerances; None when either is not in the catalogue) and `cannot_part` (both: neither camera nor
    scale can tell which was taken). `per_shelf`: `camera_skus(planogram)` when a caller looping over
    SKUs has it already."""
    per_shelf = camera_skus(planogram) if per_shelf is None else per_shelf
    skus = planogram.skus if planogram else {}
    out = []
    for alike in alikes:
        other = str(alike["sku_id"])
        shared = sorted(shelf for shelf, stocked in per_shelf.items() if {sku_id, other} <= stocked)
        a, b = skus.get(sku_id), skus.get(other)
        same = None if a is None or b is None else abs(a.weight_g - b.weight_g) <= a.weight_tol_g + b.weight_tol_g
        out.append({**alike, "shared_shelves": shared, "same_weight": same, "cannot_part": bool(shared) and bool(same)})
    return out


def unparted(planogram: Planogram | None, look_alikes: Callable[[str], Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Every pair of camera-lane products that `cannot_part` (`on_shelves`), once:
    [{"skus": [a, b], "shelves": [...]}], sorted. `look_alikes`: a SKU's look-alikes
    (`ProductGallery.look_alikes`)."""
    found: dict[tuple[str, str], list[int]] = {}
    per_shelf = camera_skus(planogram)
    for sku in sorted(set().union(*per_shelf.values())):
        for alike in on_shelves(planogram, sku, look_alikes(sku), per_shelf):
            if alike["cannot_part"]:
                a, b = sorted((sku, str(alike["sku_id"])))
                found[(a, b)] = alike["shared_shelves"]
    return [{"skus": [a, b], "shelves": shelves} for (a, b), shelves in sorted(found.items())]


async def sync_alarm(db: LedgerDB, pairs: list[dict[str, Any]], before: list[dict[str, Any]] | None) -> None:
    """Raise, re-raise or clear the one alarm for `pairs` (`unparted`); `before`: what the last call
    was given (None: first call since start, when an alarm left active by an earlier run is cleared
    if nothing is left)."""
    changed = pairs != before
    message = (
        "look-alike products on one shelf at one weight, neither camera nor scale can tell which was taken "
        "(such takes go to review): "
        + "; ".join(f"{p['skus'][0]} and {p['skus'][1]} (shelf {', '.join(map(str, p['shelves']))})" for p in pairs)
        + ". Move one of each pair to another shelf or enroll both from sharper views of the mark that differs"
    )
    await repo.sync_list_alarm(db, ALARM_KEY, ALARM_KEY, message if pairs else None, data={"pairs": pairs},
                               was_raised=bool(before), changed=changed,
                               why_cleared="no look-alikes share a shelf at one weight")
    if changed and pairs:
        log.warning("lookalikes_unparted", pairs=pairs)

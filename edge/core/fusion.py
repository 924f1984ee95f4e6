"""Take-and-go decision: fuse before/after cell detections with each shelf's weight delta. Pure.

Implements "How take-and-go decides" in ARCHITECTURE.md. Per shelf:

1. *Vision readings.* Cells are read with their top label; a cell whose margin over its runner-up
   is below ``uncertain_margin`` (in a lane that changed) may also be read as its runner-up, at a
   cost equal to that margin. Every reading gives per-lane before/after counts per SKU, hence a
   net removed multiset, the items that appeared from nowhere (cost ``added_cost`` each) and the
   moves (an SKU that left lane X and appeared in lane Y of the same shelf: a move, not a charge).
2. *Exact search.* Every multiset of at most ``max_items`` SKUs, drawn from the changed lanes,
   their neighbours and what the cameras saw there, whose catalog weights sum to the removed
   grams within the summed tolerances (+ ``scale_tol_g``). Its cost is the cheapest reading's
   cost plus one per item the reading disagrees with, plus a small weight-residual term.
3. *Confidence* is the cost margin of the best hypothesis over the runner-up. One clear answer
   -> charge (or nothing_taken); two close answers, nothing that fits, vision and weight far
   apart -> needs_review, with the evidence.

Camera down for a shelf: weight only, charge only when exactly one multiset of the shelf's SKUs
fits. Scale offline: vision only, with a stricter margin. Never charge when in doubt.

Lanes with no prototype of their SKU (`ShelfObservation.no_prototype`): see edge/core/fusion_lanes.py."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edge.core.catalog import Money, Planogram, Sku
from edge.core.fusion_lanes import blind_lanes, unseen_extras, unseen_takes, untouched
from edge.core.fusion_readings import (
    LaneCell,
    alternatives,
    combine,
    doubtful,
    label_of,
    lane_effects,
    priced,
)
from edge.core.fusion_types import (
    EMPTY,
    Basket,
    CellObs,
    Decision,
    FusionParams,
    Move,
    ShelfDecision,
    ShelfObservation,
    Status,
)

__all__ = ["EMPTY", "CellObs", "Decision", "FusionParams", "ShelfDecision", "ShelfObservation", "decide", "decide_shelf"]

@dataclass(frozen=True)
class _Reading:
    cost: float
    moves: tuple[Move, ...]


def decide(shelves: Sequence[ShelfObservation], planogram: Planogram, *, limit: Money | None = None,
           params: FusionParams = FusionParams()) -> Decision:
    """Decide one take-and-go session from per-shelf evidence.

    `planogram` gives the lanes (slot -> shelf, lane, home SKU) and the catalog weights and
    tolerances. `limit` is the customer's spending limit: a basket priced above it is sent to
    review. Returns a Decision whose `evidence` maps shelf -> what was weighed and seen.
    """
    per = [decide_shelf(s, planogram, params) for s in shelves]
    taken: dict[str, int] = {}
    for d in per:
        for sku, n in d.taken.items():
            taken[sku] = taken.get(sku, 0) + n
    reasons = [f"shelf{d.shelf}:{r}" for d in per for r in d.reasons]
    total = Money(0, planogram.currency)
    for sku, n in sorted(taken.items()):
        total = total + planogram.skus[sku].price.times(n)
    review = any(d.status == "needs_review" for d in per)
    if limit is not None and total.amount > limit.amount:
        review = True
        reasons.append(f"over_limit:{total.amount}>{limit.amount}")
    status = "needs_review" if review else ("charge" if taken else "nothing_taken")
    return Decision(status=status, taken=taken, moves=[m for d in per for m in d.moves],
                    confidence=min((d.confidence for d in per), default=1.0), reasons=reasons,
                    evidence={d.shelf: d.evidence for d in per}, total=total)


def decide_shelf(obs: ShelfObservation, planogram: Planogram, params: FusionParams = FusionParams()) -> ShelfDecision:
    """One shelf: fused when both kinds of evidence exist, else the weight-only / vision-only rule."""
    has_vision = obs.before is not None and obs.after is not None
    if not has_vision and obs.weight_delta_g is None:
        return _shelf(obs, "needs_review", {}, [], 0.0, ["no_evidence"], {})
    if not has_vision:
        return _weight_only(obs, planogram, params)
    lanes = blind_lanes(planogram, obs.shelf, obs.no_prototype)
    blind = set(lanes.values())
    if blind and obs.weight_delta_g is None:  # nothing could tell what left those lanes
        return _shelf(obs, "needs_review", {}, [], 0.0, ["scale_offline", "no_prototype"],
                          {"no_prototype": sorted(obs.no_prototype)})
    seen, obs = obs, replace(obs, before=[c for c in obs.before or () if c.slot_id not in obs.no_prototype],
                             after=[c for c in obs.after or () if c.slot_id not in obs.no_prototype])
    readings, pool = _readings(obs, planogram, params)
    b, a, sure = seen.before or (), seen.after or (), params.min_quality  # an empty read below it: unsure
    d = _vision_only(obs, readings, params) if obs.weight_delta_g is None else \
        _fused(obs, planogram, readings, pool - blind, params,
               frozenset(blind - untouched(b, a, lanes, EMPTY, sure_empty=sure)))
    if d.status == "charge" and (unseen := unseen_takes(b, a, lanes, d.taken, EMPTY, sure)):
        d = replace(d, status="needs_review", confidence=0.0, reasons=[*d.reasons, *unseen])  # lanes look untouched
    poor = [f"{when}:{c.slot_id}/{c.position}" for when, cells in (("before", obs.before), ("after", obs.after))
            for c in cells or () if doubtful(c, params)]
    if poor:  # for the reviewer: the cells the cameras saw poorly
        d.evidence["doubtful_cells"] = poor
    return d


def _shelf(obs: ShelfObservation, status: Status, taken: dict[str, int], moves: list[Move], conf: float,
           reasons: list[str], ev: dict[str, Any]) -> ShelfDecision:
    ev = {"weight_delta_g": obs.weight_delta_g, "camera": obs.before is not None and obs.after is not None,
          **ev}
    return ShelfDecision(obs.shelf, status, taken, moves, round(conf, 3), reasons, ev)


# -- vision readings -------------------------------------------------------------------------------

def _readings(obs: ShelfObservation, planogram: Planogram,
              params: FusionParams) -> tuple[dict[Basket, _Reading], set[str]]:
    """All readings of the changed cells -> cheapest reading per removed multiset; plus the SKU pool."""
    assert obs.before is not None and obs.after is not None
    lanes = {s.slot_id: s for s in planogram.slots_on_shelf(obs.shelf)}
    before = {(c.slot_id, c.position): c for c in obs.before if c.slot_id in lanes}
    after = {(c.slot_id, c.position): c for c in obs.after if c.slot_id in lanes}
    changed = {k[0] for k in before.keys() | after.keys()
               if label_of(before.get(k)) != label_of(after.get(k))}
    delta: dict[tuple[str, str], int] = {}  # (slot, sku) -> before - after, top labels
    for sign, cells in ((1, before), (-1, after)):
        for c in cells.values():
            _bump(delta, c.slot_id, c.label, sign)
    by_lane: dict[str, list[LaneCell]] = {}
    for sign, c, opts in alternatives(before, after, changed, params, scale=obs.weight_delta_g is not None):
        if sign > 0:  # a stranger in the after frame is a move or an addition, which the reading pays already
            foreign = params.pure_foreign_cost if c.slot_id in obs.pure else params.foreign_cost
            opts = priced(c, opts, lanes[c.slot_id].sku_id, foreign)
        by_lane.setdefault(c.slot_id, []).append((sign, c.label, opts))
    bound = params.max_cost + params.min_confidence  # a dearer reading never decides: review either way
    out: dict[Basket, _Reading] = {}
    effects = {slot: lane_effects(cells, bound) for slot, cells in by_lane.items()}
    for cost, chosen in combine(effects, params.max_readings):
        d = dict(delta)
        for slot, effect in chosen:
            for sku, n in effect:
                _bump(d, slot, sku, n)
        basket, added, moves = _net(d)
        cost += params.added_cost * added + params.move_cost * len(moves)
        if basket not in out or cost < out[basket].cost:
            out[basket] = _Reading(cost, moves)
    return out, _pool(planogram, lanes, changed, before, after)


def _bump(d: dict[tuple[str, str], int], slot: str, sku: str, by: int) -> None:
    if sku != EMPTY:
        d[(slot, sku)] = d.get((slot, sku), 0) + by


def _net(delta: Mapping[tuple[str, str], int]) -> tuple[Basket, int, tuple[Move, ...]]:
    """Per-lane deltas -> (net removed multiset, items added from nowhere, same-shelf moves)."""
    per_sku: dict[str, list[tuple[str, int]]] = {}
    for (slot, sku), n in sorted(delta.items()):
        if n:
            per_sku.setdefault(sku, []).append((slot, n))
    removed: list[tuple[str, int]] = []
    added = 0
    moves: list[Move] = []
    for sku, lanes in per_sku.items():
        net = sum(n for _, n in lanes)
        if net > 0:
            removed.append((sku, net))
        added += max(0, -net)
        moves.extend(_pair(sku, [(s, n) for s, n in lanes if n > 0], [(s, -n) for s, n in lanes if n < 0]))
    return tuple(sorted(removed)), added, tuple(moves)


def _pair(sku: str, gone: list[tuple[str, int]], came: list[tuple[str, int]]) -> list[Move]:
    """Match lanes that lost `sku` with lanes that gained it, item by item."""
    src = [slot for slot, n in gone for _ in range(n)]
    dst = [slot for slot, n in came for _ in range(n)]
    return [(sku, a, b) for a, b in zip(src, dst, strict=False)]


def _pool(planogram: Planogram, lanes: Mapping[str, Any], changed: set[str],
          before: Mapping[tuple[str, int], CellObs], after: Mapping[tuple[str, int], CellObs]) -> set[str]:
    """SKUs a hypothesis may contain: homes of changed lanes and neighbours, and what was seen there."""
    touched = {lanes[s].lane for s in changed}
    near = {s.slot_id for s in lanes.values() if any(abs(s.lane - t) <= 1 for t in touched)}
    pool = {lanes[s].sku_id for s in near}
    for cells in (before, after):
        for c in cells.values():
            if c.slot_id in changed:
                pool.update({c.label, c.runner_up})
    return {s for s in pool if s in planogram.skus}


# -- hypotheses ----------------------------------------------------------------------------------

def _fits(pool: Sequence[Sku], target_g: float, max_items: int, scale_tol: float) -> Iterator[tuple[Basket, float]]:
    """Every multiset (<= max_items) whose weight is target_g within summed tolerance; (basket, resid/tol)."""
    skus = sorted(pool, key=lambda s: s.sku_id)
    max_w = max((s.weight_g + s.weight_tol_g for s in skus), default=0.0)

    def rec(start: int, chosen: list[Sku], w: float, tol: float) -> Iterator[tuple[Basket, float]]:
        resid = abs(w - target_g)
        if resid <= tol + scale_tol:
            counts: dict[str, int] = {}
            for s in chosen:
                counts[s.sku_id] = counts.get(s.sku_id, 0) + 1
            yield tuple(sorted(counts.items())), resid / (tol + scale_tol)
        if len(chosen) >= max_items or w - tol > target_g + scale_tol + max_w:
            return
        for i in range(start, len(skus)):
            s = skus[i]
            if w + s.weight_g - (tol + s.weight_tol_g) <= target_g + scale_tol:
                yield from rec(i, [*chosen, s], w + s.weight_g, tol + s.weight_tol_g)

    yield from rec(0, [], 0.0, 0.0)


def _distance(a: Basket, b: Basket) -> int:
    da, db = dict(a), dict(b)
    return sum(abs(da.get(k, 0) - db.get(k, 0)) for k in da.keys() | db.keys())


def _fused(obs: ShelfObservation, planogram: Planogram, readings: Mapping[Basket, _Reading], pool: set[str],
           params: FusionParams, blind: frozenset[str] = frozenset()) -> ShelfDecision:
    assert obs.weight_delta_g is not None
    target = -obs.weight_delta_g
    ranked: list[tuple[float, Basket, Basket]] = []
    for basket, resid in _fits([planogram.skus[s] for s in pool | blind], target, params.max_items,
                               params.scale_tol_g):
        seen = tuple((s, n) for s, n in basket if s not in blind)
        cost, rb = min((r.cost + _distance(seen, b), b) for b, r in readings.items())
        ranked.append((round(cost + params.weight_soft * resid, 6), basket, rb))
    ranked.sort()
    vision_best = min(readings.items(), key=lambda kv: kv[1].cost)
    ev: dict[str, Any] = {"vision": _fmt(vision_best[0]), "pool": sorted(pool),
                          "hypotheses": [{"basket": _fmt(b), "cost": c} for c, b, _ in ranked[:4]]}
    if obs.no_prototype:
        ev["no_prototype"] = sorted(obs.no_prototype)
    if not ranked:
        return _shelf(obs, "needs_review", dict(vision_best[0]), [], 0.0, ["weight_fits_nothing"], ev)
    cost, basket, rb = ranked[0]
    conf = min(1.0, ranked[1][0] - cost) if len(ranked) > 1 else 1.0
    reasons = ["vision_weight_disagree"] if cost > params.max_cost else []
    if conf < params.min_confidence:
        reasons.append(f"ambiguous:{_fmt(basket)}|{_fmt(ranked[1][1])}")
    lanes = {s.slot_id: s.sku_id for s in planogram.slots_on_shelf(obs.shelf)}  # blind lanes' cells are gone
    reasons += unseen_extras(obs.before or (), obs.after or (), lanes, dict(basket), dict(rb), EMPTY)
    status = "needs_review" if reasons else ("charge" if basket else "nothing_taken")
    by_weight = sorted(s for s, _ in basket if s in blind)
    if by_weight:  # on the order and the evidence: charged on the scale's word alone
        reasons.append("weight_only:" + "+".join(by_weight))
    return _shelf(obs, status, dict(basket), list(readings[rb].moves), conf, reasons, ev)


def _vision_only(obs: ShelfObservation, readings: Mapping[Basket, _Reading], params: FusionParams) -> ShelfDecision:
    ranked = sorted((r.cost, b, r.moves) for b, r in readings.items())
    cost, basket, moves = ranked[0]
    conf = min(1.0, ranked[1][0] - cost) if len(ranked) > 1 else 1.0
    reasons = ["scale_offline"]
    ev = {"vision": _fmt(basket), "hypotheses": [{"basket": _fmt(b), "cost": round(c, 3)} for c, b, _ in ranked[:4]]}
    if cost > params.max_cost or conf < params.vision_only_min_confidence:
        return _shelf(obs, "needs_review", dict(basket), list(moves), conf, [*reasons, "ambiguous"], ev)
    return _shelf(obs, "charge" if basket else "nothing_taken", dict(basket), list(moves), conf, reasons, ev)


def _weight_only(obs: ShelfObservation, planogram: Planogram, params: FusionParams) -> ShelfDecision:
    assert obs.weight_delta_g is not None
    pool = [planogram.skus[s.sku_id] for s in planogram.slots_on_shelf(obs.shelf)]
    fits = sorted({b for b, _ in _fits(pool, -obs.weight_delta_g, params.max_items, params.scale_tol_g)})
    ev = {"fits": [_fmt(b) for b in fits[:6]], "fit_count": len(fits)}
    if len(fits) != 1:
        reason = "weight_fits_nothing" if not fits else "weight_ambiguous"
        return _shelf(obs, "needs_review", dict(fits[0]) if fits else {}, [], 0.0, ["camera_down", reason], ev)
    basket = fits[0]
    return _shelf(obs, "charge" if basket else "nothing_taken", dict(basket), [], 1.0, ["camera_down"], ev)


def _fmt(b: Basket) -> str:
    return "+".join(f"{n}x{s}" for s, n in b) or "nothing"


"""The take-and-go decision's data: what the cameras and scales saw, the tuning, the outcome (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.core.catalog import Money

EMPTY = "empty"
Status = str  # "charge" | "needs_review" | "nothing_taken"
Move = tuple[str, str, str]  # (sku_id, from_slot, to_slot)
Basket = tuple[tuple[str, int], ...]  # sorted (sku_id, count) pairs: a hashable multiset


@dataclass(frozen=True)
class CellObs:
    """What the recognizer saw in one cell (lane `slot_id`, row `position`)."""

    slot_id: str
    position: int
    label: str  # sku id or "empty"
    score: float
    runner_up: str = EMPTY
    runner_up_score: float = 0.0
    quality: float = 1.0  # how much the cell looks like its label (recognizer quality: similarity vs the SKU's references)
    settled: bool = True  # False: the name is unsure between the label and its runner-up (look-alikes), however clean the view

    @property
    def margin(self) -> float:
        return self.score - self.runner_up_score


@dataclass(frozen=True)
class ShelfObservation:
    """Evidence for one shelf. `before`/`after` None: camera down. `weight_delta_g` = after - before
    in grams (negative when items were taken); None: scale offline."""

    shelf: int
    before: Sequence[CellObs] | None
    after: Sequence[CellObs] | None
    weight_delta_g: float | None
    no_prototype: frozenset[str] = frozenset()  # lanes (slot ids) decided by weight: no prototype of their SKU
    # lanes the ledger knows held only their own product when the door opened: restocked since anything
    # could have been put into them (`edge.services.takeandgo_lanes.mixed_lanes`); [] = none known
    pure: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FusionParams:
    """Tuning knobs (defaults measured with bench/checkout_core.py)."""

    uncertain_margin: float = 0.35
    misread_cost: float = 0.5
    max_readings: int = 2048  # readings combined across changed lanes (each lane folded to its net effects)
    max_items: int = 6
    scale_tol_g: float = 3.0
    added_cost: float = 1.0
    weight_soft: float = 0.1
    min_confidence: float = 0.55  # above misread_cost: one frame disagreeing on a look-alike -> review
    max_cost: float = 1.0
    vision_only_min_confidence: float = 0.5  # bench: 0 false charges, ~2.6% review; docs/take-and-go.md
    min_quality: float = 0.85  # below: a product reading is doubtful (a hand, glare); clean views >= 0.96
    min_empty_quality: float = 0.75  # below: an "empty" reading is doubtful too (a hand over a package: <= 0.69; bare shelf >= 0.79)
    doubtful_cost: float = 0.4  # believing a doubtful cell against a clear view of the same cell
    clear_quality: float = 0.95  # both views at least this clean: a disagreement is a real change
    clear_misread_cost: float = 1.0  # ... so calling one of them a misread costs as much as an item
    move_cost: float = 0.5  # an item carried to another lane of the shelf: rarer than a take
    foreign_cost: float = 0.5  # reading a cell as a product that is not its lane's own, against the view: someone moved it (= move_cost)
    # ... in the before frame of a lane known to hold only its own product (`ShelfObservation.pure`):
    # above min_confidence by 0.2, so an unsure look-alike read leaning to the other twin by less
    # than 0.2 does not overrule the ledger, one leaning more goes to review, a settled read is believed
    pure_foreign_cost: float = 0.75


@dataclass(frozen=True)
class ShelfDecision:
    shelf: int
    status: Status
    taken: dict[str, int]
    moves: list[Move]
    confidence: float
    reasons: list[str]
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """The outcome of one session. Charge `taken` only when `status == "charge"`; on
    needs_review `taken` is the best guess shown to the reviewer, never billed."""

    status: Status
    taken: dict[str, int]
    moves: list[Move]
    confidence: float
    reasons: list[str]
    evidence: dict[int, dict[str, Any]] = field(default_factory=dict)
    total: Money | None = None

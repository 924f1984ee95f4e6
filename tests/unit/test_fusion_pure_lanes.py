"""Take-and-go fusion with the ledger's word on which lanes hold only their own product (issue 13).

A lane restocked since anything could have been put into it (`ShelfObservation.pure`) makes an
unsure look-alike read of its before frame lean on the lane's own product (`pure_foreign_cost`); a
read that leans clearly the other way still goes to review, and a settled read is still believed.
"""

from __future__ import annotations

from dataclasses import replace

from edge.core.catalog import Planogram
from edge.core.fusion import EMPTY, ShelfObservation, decide
from edge.services.evidence import ShelfView, cells_to_json
from edge.services.takeandgo_lanes import mixed_lanes
from tests.unit.test_fusion import PLAN, cells, full, observe, take

I1 = "I1"  # yogurt_straw; its twin yogurt_van (I2) weighs the same: the scale cannot part them


def _twin_take(lean: tuple[str, float, str, float, float, bool], pure: frozenset[str]) -> list[ShelfObservation]:
    """One yogurt_straw taken from I1 (the lane moves up: cell 5 goes bare); that cell's before read is `lean`."""
    before = full()
    obs = observe(before, take(before, I1), unsure_before={(I1, 5): lean})
    return [replace(o, pure=pure) for o in obs]


def test_an_unsure_twin_read_in_a_lane_known_pure_is_charged_as_the_lanes_product() -> None:
    barely_van = ("yogurt_van", 0.50, "yogurt_straw", 0.49, 0.96, False)  # a coin toss between the twins
    d = decide(_twin_take(barely_van, frozenset()), PLAN)
    assert d.status == "needs_review"  # without the ledger: it may be a van someone put there
    d = decide(_twin_take(barely_van, frozenset({I1})), PLAN)
    assert d.status == "charge" and d.taken == {"yogurt_straw": 1}, d.reasons
    d = decide(_twin_take(barely_van, frozenset({"I2"})), PLAN)  # only the other lane known pure
    assert d.status == "needs_review"


def test_a_read_leaning_clearly_to_the_twin_still_goes_to_review_in_a_pure_lane() -> None:
    leaning_van = ("yogurt_van", 0.64, "yogurt_straw", 0.34, 0.96, False)  # unsure, but 0.3 towards the van
    d = decide(_twin_take(leaning_van, frozenset({I1})), PLAN)
    assert d.status == "needs_review" and "yogurt_van" in str(d.reasons)


def test_a_settled_read_of_a_stranger_is_believed_even_in_a_pure_lane() -> None:
    """Nobody recorded a van going into I1, yet the camera sees one clearly: the ledger can be wrong
    (a product put in by hand), a clear view is not."""
    clear_van = ("yogurt_van", 0.95, "yogurt_straw", 0.03, 0.97, True)
    d = decide(_twin_take(clear_van, frozenset({I1})), PLAN)
    assert d.status == "charge" and d.taken == {"yogurt_van": 1}, d.reasons


def _data(before: dict[str, list[str]], after: dict[str, list[str]], *, down: int | None = None) -> dict:
    def view(lanes: dict[str, list[str]], shelf: int) -> dict:
        return cells_to_json(ShelfView(shelf, None if shelf == down else cells(lanes, shelf), "down" if shelf == down else None))

    return {"shelves": [0, 1, 2, 3], "before": {str(k): view(before, k) for k in range(4)},
            "after": {str(k): view(after, k) for k in range(4)}}


def test_lanes_a_session_may_have_put_another_product_into() -> None:
    plan: Planogram = PLAN
    before = full()
    taken = take(before, "F1")
    assert mixed_lanes(_data(before, taken), [], False, plan) == set()  # a take puts nothing in
    back = take(before, "F1", "F3")
    back["F3"].append("cola")  # a cola put back at the end of the orange lane
    assert mixed_lanes(_data(take(before, "F1", "F3"), back), [], False, plan) == {"F3"}
    assert mixed_lanes(_data(before, taken), [("cola", "F1", "F4")], False, plan) == {"F4"}  # fusion's move
    assert mixed_lanes(_data(before, taken), [], True, plan) == set()  # even in a review
    poor = _data(take(before, "F1", "F3"), back)
    poor["after"]["0"] = cells_to_json(ShelfView(0, cells(back, 0, {("F3", 5): ("cola", 0.6, "orange", 0.2, 0.5)})))
    assert mixed_lanes(poor, [], False, plan) == set()  # a hand over the bare cell: fusion's to explain
    assert mixed_lanes(poor, [], True, plan) == {"F3"}  # and when it could not, the lane is spoilt
    down = mixed_lanes(_data(before, before, down=2), [], False, plan)  # unseen lanes: anything may be there
    assert down == {s.slot_id for s in plan.slots_on_shelf(2)} and down
    assert EMPTY not in down


def test_a_look_alike_name_flipping_between_unsure_reads_does_not_spoil_a_lane() -> None:
    """The same yogurt read straw before and van after, both unsure, while the lane keeps its count:
    one package read twice, not a swap. A clear change of product on good views is a swap."""
    before = full()
    data = _data(before, before)
    straw = {("I1", 2): ("yogurt_straw", 0.5, "yogurt_van", 0.45, 0.96, False)}
    data["before"]["3"] = cells_to_json(ShelfView(3, cells(before, 3, straw)))
    van = {("I1", 2): ("yogurt_van", 0.5, "yogurt_straw", 0.45, 0.96, False)}
    data["after"]["3"] = cells_to_json(ShelfView(3, cells(before, 3, van)))
    assert mixed_lanes(data, [], False, PLAN) == set()
    assert mixed_lanes(data, [], True, PLAN) == {"I1"}  # unless the session went to review
    clear = {("I1", 2): ("yogurt_van", 0.95, "yogurt_straw", 0.03, 0.97, True)}
    data["after"]["3"] = cells_to_json(ShelfView(3, cells(before, 3, clear)))
    assert mixed_lanes(data, [], False, PLAN) == {"I1"}

"""Take-and-go fusion when some lanes' products have no prototype in the gallery (issue 13).

Only those lanes lose vision: their cells are ignored (the recognizer names an unknown product as
some other one) and they are decided by the shelf's weight less what vision saw on the other lanes.
The other lanes of the same shelf keep the fused vision + weight decision.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from edge.core.fusion import EMPTY, CellObs, ShelfObservation, decide
from tests.unit.test_fusion import PLAN, SHELF_OF, full, observe, take

LANES = sorted(SHELF_OF)
SKU_OF = {s.slot_id: s.sku_id for s in PLAN.slots.values()}


def misread(obs: ShelfObservation, lanes: frozenset[str], rng: random.Random) -> ShelfObservation:
    """The shelf as the daemon sees it with no prototype for `lanes`' products: their cells read as
    whatever the gallery holds nearest (another product, anything but their own SKU) or empty, a new guess
    in each frame, and always on a poor likeness (quality): a package is not the bare shelf's picture."""
    wrong = [*sorted(set(SKU_OF.values()) - {SKU_OF[s] for s in lanes}), EMPTY]

    def fake(cells: list[CellObs] | None) -> list[CellObs] | None:
        return None if cells is None else [
            CellObs(c.slot_id, c.position, rng.choice(wrong), 0.9, EMPTY, 0.05, quality=rng.uniform(0.1, 0.8))
            if c.slot_id in lanes and c.label != EMPTY else c for c in cells]

    mine = frozenset(s for s in lanes if SHELF_OF[s] == obs.shelf)
    return ShelfObservation(obs.shelf, fake(list(obs.before or [])), fake(list(obs.after or [])),
                            obs.weight_delta_g, no_prototype=mine)


def blind(obs: list[ShelfObservation], lanes: frozenset[str], seed: int = 0) -> list[ShelfObservation]:
    rng = random.Random(seed)
    return [misread(o, lanes, rng) for o in obs]


def test_a_take_from_another_lane_of_the_shelf_keeps_vision() -> None:
    before = full()
    after = take(before, "F2")  # cola_zero 350 g: cola, orange, lemon weigh 352-356 g
    d = decide(blind(observe(before, after), frozenset({"F1"})), PLAN)
    assert (d.status, d.taken) == ("charge", {"cola_zero": 1})
    assert not any("weight_only" in r for r in d.reasons)


def test_a_take_from_the_lane_without_prototype_is_charged_by_weight() -> None:
    before = full()
    after = take(before, "F1", "F1")
    obs = observe(before, after)
    # the unknown cola reads as its look-alike: unmasked, this would be two cola_zero taken from F1
    lane = {(p): ("cola_zero", 0.92, "cola", 0.05) for p in range(6)}
    obs[0] = ShelfObservation(0, [c if c.slot_id != "F1" else CellObs("F1", c.position, *lane[c.position])
                                  for c in obs[0].before or []],
                              [c if c.slot_id != "F1" or c.label == EMPTY else CellObs("F1", c.position,
                                                                                        *lane[c.position])
                               for c in obs[0].after or []], obs[0].weight_delta_g, frozenset({"F1"}))
    d = decide(obs, PLAN)
    assert (d.status, d.taken) == ("charge", {"cola": 2})
    assert "shelf0:weight_only:cola" in d.reasons
    assert d.evidence[0]["no_prototype"] == ["F1"]


def test_takes_from_both_kinds_of_lane_on_one_shelf() -> None:
    before = full()
    after = take(before, "F1", "F3", "F5")
    d = decide(blind(observe(before, after), frozenset({"F1"})), PLAN)
    assert (d.status, d.taken) == ("charge", {"cola": 1, "orange": 1, "energy": 1})


def test_two_lanes_without_prototype_that_weigh_alike_go_to_review_unless_one_is_seen_unchanged() -> None:
    before = full()
    obs = observe(before, take(before, "F1"))  # cola 352 g vs lemon 355 g, both unknown to the gallery
    dark = frozenset({"F1", "F4"})
    d = decide([replace(o, no_prototype=dark) if o.shelf == 0 else o for o in obs], PLAN)
    assert (d.status, d.taken) == ("charge", {"cola": 1})  # F4 seen filled and unchanged: not lemon
    # a hand over F4 in the after frame: one of its cells reads empty on a poor likeness, so F4 is not
    # provably unchanged and the grams fit one cola as well as one lemon
    hand = [CellObs("F4", 0, EMPTY, 0.6, "lemon", 0.3, quality=0.5) if (c.slot_id, c.position) == ("F4", 0)
            else c for c in obs[0].after or []]
    d = decide([replace(obs[0], after=hand, no_prototype=dark), *obs[1:]], PLAN)
    assert d.status == "needs_review"
    assert any(r.startswith("shelf0:ambiguous") for r in d.reasons), d.reasons


def test_a_residual_of_no_whole_count_goes_to_review() -> None:
    before = full()
    after = take(before, "F1")
    d = decide(blind(observe(before, after, noise=-150.0), frozenset({"F1"})), PLAN)  # 502 g gone
    assert d.status == "needs_review"
    assert "shelf0:weight_fits_nothing" in d.reasons


def test_scale_offline_on_a_shelf_with_such_a_lane_goes_to_review() -> None:
    before = full()
    obs = [ShelfObservation(o.shelf, o.before, o.after, None, o.no_prototype)
           for o in blind(observe(before, take(before, "F1")), frozenset({"F1"}))]
    d = decide(obs, PLAN)
    assert d.status == "needs_review" and "shelf0:no_prototype" in d.reasons


def test_other_shelves_are_not_affected() -> None:
    before = full()
    after = take(before, "H1")  # ham 210 g vs veg 205 g: vision tells them apart
    d = decide(blind(observe(before, after), frozenset({"F1", "F4"})), PLAN)
    assert (d.status, d.taken) == ("charge", {"sandwich_ham": 1})


takes = st.lists(st.sampled_from(LANES), max_size=4)
noise = st.floats(-2.0, 2.0)


@settings(max_examples=150, deadline=None)
@given(taken=takes, chosen=st.sets(st.sampled_from(LANES), min_size=1, max_size=4), noise=noise,
       seed=st.integers(0, 1000))
def test_a_basket_only_from_lanes_with_prototypes_is_decided_as_before(
        taken: list[str], chosen: set[str], noise: float, seed: int) -> None:
    lanes = frozenset(chosen - set(taken))
    before = full()
    after = take(before, *taken)
    plain = decide(observe(before, after, noise=noise), PLAN)
    d = decide(blind(observe(before, after, noise=noise), lanes, seed), PLAN)
    assert (d.status, d.taken, d.moves) == (plain.status, plain.taken, plain.moves)


@settings(max_examples=200, deadline=None)
@given(taken=takes, dark=st.lists(st.sampled_from(LANES), min_size=1, max_size=3),
       extra=st.sets(st.sampled_from(LANES), max_size=3), noise=noise, seed=st.integers(0, 1000))
def test_a_take_from_a_lane_without_prototype_is_the_true_basket_or_review(
        taken: list[str], dark: list[str], extra: set[str], noise: float, seed: int) -> None:
    lanes = frozenset(dark) | frozenset(extra)
    before = full()
    assume(max(Counter([*taken, *dark]).values()) <= len(before[dark[0]]))  # a lane holds 6: no 7th take
    after = take(before, *taken, *dark)
    truth: dict[str, int] = {}
    for slot in [*taken, *dark]:
        truth[SKU_OF[slot]] = truth.get(SKU_OF[slot], 0) + 1
    d = decide(blind(observe(before, after, noise=noise), lanes, seed), PLAN)
    assert d.status == "needs_review" or (d.status == "charge" and d.taken == truth), (d.status, d.taken, truth)


def test_a_take_vision_missed_is_not_billed_as_the_product_without_prototype() -> None:
    """cola_zero (350 g) leaves F2 but the cameras see F2 unchanged; cola (352 g) in F1 has no prototype
    and its cells did not change either: the weight fits 'one cola' - a wrong charge unless the untouched
    F1 cells veto it (edge/core/fusion_lanes.py): F1 shows the same cells filled, so cola is not a
    hypothesis and nothing else weighs 350 g."""
    before = full()
    obs = observe(before, take(before, "F2"))
    missed = [c for c in obs[0].before or [] if c.slot_id == "F2"]
    obs[0] = ShelfObservation(0, obs[0].before, [c for c in obs[0].after or [] if c.slot_id != "F2"] + missed,
                              obs[0].weight_delta_g)
    d = decide(blind(obs, frozenset({"F1"})), PLAN)
    assert d.status == "needs_review" and d.reasons == ["shelf0:weight_fits_nothing"], d.reasons
    assert decide(obs, PLAN).status == "needs_review"  # with a full gallery, vision and weight disagree too


def steady(obs: ShelfObservation, lanes: frozenset[str]) -> ShelfObservation:
    """As a real (deterministic) recognizer misreads an unknown product: the same wrong label for the same
    cell in both frames, so an untouched lane looks unchanged (and can be ruled out)."""
    wrong = sorted(set(SKU_OF.values()) - {SKU_OF[s] for s in lanes})

    def fake(cells: list[CellObs] | None) -> list[CellObs] | None:
        return None if cells is None else [
            CellObs(c.slot_id, c.position, wrong[(ord(c.slot_id[-1]) + c.position) % len(wrong)], 0.9, EMPTY, 0.05)
            if c.slot_id in lanes and c.label != EMPTY else c for c in cells]

    mine = frozenset(s for s in lanes if SHELF_OF[s] == obs.shelf)
    return ShelfObservation(obs.shelf, fake(obs.before), fake(obs.after), obs.weight_delta_g, no_prototype=mine)


@settings(max_examples=200, deadline=None)
@given(taken=takes, lanes=st.sets(st.sampled_from(LANES), min_size=1, max_size=4), noise=noise,
       missed=st.booleans())
# found by a fresh clone's run: G3's take unseen, and the scale's grams named tea_lemon (a neighbour of G5
# that weighs like tea_peach) although the cameras saw its lane untouched: that must go to review
@example(taken=["G3", "G5"], lanes={"F1"}, noise=0.0, missed=True)
def test_steady_misreads_and_a_missed_take_never_charge_a_wrong_basket(
        taken: list[str], lanes: set[str], noise: float, missed: bool) -> None:
    """Whatever is taken, from any lanes, with or without a prototype, and even when the cameras miss one
    take on a lane they know: the charge is the true basket or the session goes to review."""
    before = full()
    after = take(before, *taken)
    truth = dict(Counter(SKU_OF[s] for s in taken))
    obs = observe(before, after, noise=noise)
    known = [s for s in taken if s not in lanes]
    if missed and known:  # the cameras saw that lane unchanged
        lane = known[0]
        k = SHELF_OF[lane]
        obs[k] = ShelfObservation(k, obs[k].before, [c for c in obs[k].after or [] if c.slot_id != lane]
                                  + [c for c in obs[k].before or [] if c.slot_id == lane], obs[k].weight_delta_g)
    d = decide([steady(o, frozenset(lanes)) for o in obs], PLAN)
    assert d.status == "needs_review" or (d.status in ("charge", "nothing_taken") and d.taken == truth), \
        (d.status, d.taken, truth)


def test_an_unchanged_lane_without_prototype_is_ruled_out_though_its_guesses_differ() -> None:
    """Seen in the e2e rig with a retrained model: an unknown package is read as the nearest known product,
    and two frames may guess differently (salad, then water) for a cell nobody touched. Its lane still shows
    the same cells filled, so it cannot explain the grams of a take from the other unknown lane."""
    before = full()
    obs = observe(before, take(before, "F4"))  # lemon 355 g; cola (F1) 352 g: both without prototype
    guess = ({"F1": "salad", "F4": "juice_apple"}, {"F1": "water", "F4": "water"})

    def read(cells: list[CellObs] | None, frame: int) -> list[CellObs]:
        return [CellObs(c.slot_id, c.position, guess[frame][c.slot_id], 0.15, "crisps", 0.14)
                if c.slot_id in guess[frame] and c.label != EMPTY else c for c in cells or []]

    obs[0] = ShelfObservation(0, read(obs[0].before, 0), read(obs[0].after, 1), obs[0].weight_delta_g,
                              frozenset({"F1", "F4"}))
    d = decide(obs, PLAN)
    assert (d.status, d.taken) == ("charge", {"lemon": 1}), d.reasons
    assert "shelf0:weight_only:lemon" in d.reasons

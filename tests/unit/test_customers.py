"""Scripted customers: deterministic per seed, and the truth matches what left the fridge."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_sim.customers import KINDS, LOOK_ALIKES, apply, generate
from hw_sim.world import FridgeWorld, load_demo_planogram

DOC = load_demo_planogram()


def world_with_gaps(seed: int) -> FridgeWorld:
    w = FridgeWorld(DOC)
    rng = random.Random(seed)
    for slot in sorted(w.lanes):
        for _ in range(rng.randint(0, 3)):
            w.take(slot)
    return w


def test_same_seed_same_scenario_and_generate_does_not_touch_the_world() -> None:
    w = world_with_gaps(1)
    snap = w.snapshot()
    a = [generate(w, random.Random(s)) for s in range(30)]
    b = [generate(snap, random.Random(s)) for s in range(30)]
    assert a == b
    assert w.snapshot() == snap
    assert {s.kind for s in a} == set(KINDS)


def test_put_back_leaves_nothing_removed_and_lanes_as_before() -> None:
    w = world_with_gaps(2)
    for seed in range(20):
        sc = generate(w, random.Random(seed), kind="put_back")
        w2 = world_with_gaps(2)
        truth = apply(w2, sc)
        slot, sku = sc.actions[-1][1], sc.actions[-1][2]
        assert sc.actions[0] == ("take", slot)
        assert truth.lanes[slot][0] == sku
        assert sum(truth.removed.values()) == len(sc.actions) - 2


def test_misplace_moves_one_item_to_another_lane_of_the_same_shelf() -> None:
    w = world_with_gaps(3)
    sc = generate(w, random.Random(5), kind="misplace")
    (_, src), (_, dst, sku) = sc.actions
    assert w.lanes[src].shelf == w.lanes[dst].shelf and src != dst
    truth = apply(w, sc)
    assert truth.removed == Counter()
    assert truth.lanes[dst][0] == sku


def test_swap_ends_with_one_item_taken() -> None:
    w = world_with_gaps(4)
    sc = generate(w, random.Random(9), kind="swap")
    truth = apply(w, sc)
    assert sum(truth.removed.values()) == 1
    assert truth.removed == Counter({w.lanes[sc.actions[2][1]].home_sku: 1})


def test_look_alike_takes_come_from_one_look_alike_pair() -> None:
    w = FridgeWorld(DOC)
    pairs = [set(p) for p in LOOK_ALIKES]
    for seed in range(20):
        sc = generate(w, random.Random(seed), kind="look_alike")
        homes = {w.lanes[a[1]].home_sku for a in sc.actions}
        assert 1 <= len(sc.actions) <= 3
        assert any(homes <= p for p in pairs)


def test_misplace_without_room_falls_back_to_a_take() -> None:
    sc = generate(FridgeWorld(DOC), random.Random(0), kind="misplace")  # every lane is full
    assert sc.kind == "take"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario kind"):
        generate(FridgeWorld(DOC), random.Random(0), kind="shoplift")


@settings(max_examples=60, deadline=None)
@given(world_seed=st.integers(0, 10_000), seed=st.integers(0, 10_000))
def test_truth_is_takes_minus_puts_and_lanes_never_overflow(world_seed: int, seed: int) -> None:
    w = world_with_gaps(world_seed)
    sc = generate(w, random.Random(seed))
    truth = apply(w, sc)
    takes = sum(1 for a in sc.actions if a[0] == "take")
    puts = sum(1 for a in sc.actions if a[0] == "put")
    assert sum(truth.removed.values()) == takes - puts
    assert takes <= 5
    assert all(len(items) <= w.lanes[s].capacity for s, items in truth.lanes.items())

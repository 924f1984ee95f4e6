"""FDA 4-204.111 lockout rule: limit, allowance, restock grace, no data, technician clear."""

from __future__ import annotations

import pytest

from edge.core import food_safety as fs

LIM = fs.Limits(limit_c=5.0, max_s=1800, restock_grace_s=3600)


def run(readings, state=None):
    state = state or fs.State()
    out = []
    for t, c in readings:
        state, effects = fs.observe(state, c, t, LIM)
        out += [(t, e) for e in effects]
    return state, out


def test_locks_after_30_minutes_above_5c_not_before():
    state, effects = run([(t, 6.0) for t in range(0, 1800 + 1, 60)])
    assert effects == [] and not state.locked  # exactly 30 min: still allowed
    state, effects = run([(1860, 6.5)], state)
    assert state.locked and len(effects) == 1
    lock = effects[0][1]
    assert isinstance(lock, fs.Lock) and lock.reason == "above_limit"
    assert lock.data["peak_c"] == 6.5 and lock.data["above_s"] == 1860


def test_at_the_limit_is_not_above_it():
    state, effects = run([(t, 5.0) for t in range(0, 7200, 60)])
    assert not state.locked and state.above_since is None


def test_a_dip_below_the_limit_restarts_the_allowance():
    state, _ = run([(0, 6.0), (1500, 6.0), (1560, 4.9), (1620, 6.0), (3000, 6.0)])
    assert not state.locked  # 1620..3000 is 23 min


def test_lockout_holds_after_the_cabinet_recovers():
    state, _ = run([(t, 7.0) for t in range(0, 2000, 60)])
    state, effects = run([(t, 3.0) for t in range(2000, 90000, 600)], state)
    assert state.locked and effects == []
    assert not fs.sellable(state, perishable=True) and fs.sellable(state, perishable=False)


def test_restock_grace_lets_fresh_product_pull_down():
    state = fs.restocked(fs.State(), 0, LIM)
    state, effects = run([(t, 8.0) for t in range(0, 3600, 60)], state)
    assert not state.locked  # 59 min above the limit, but inside the grace hour
    state, effects = run([(3600, 7.0)], state)
    assert state.locked and effects  # grace over and the excursion lasted > 30 min


def test_missing_temperature_counts_as_an_excursion():
    state, effects = run([(t, None) for t in range(0, 1900, 60)])
    assert state.locked and effects[0][1].reason == "no_temperature"
    state, _ = run([(0, None), (600, None), (900, 4.0), (2500, None)])
    assert not state.locked  # a short comms gap is forgiven


def test_only_a_named_technician_clears_and_the_clock_restarts():
    state, _ = run([(t, 7.0) for t in range(0, 2000, 60)])
    with pytest.raises(ValueError):
        fs.clear(state, "", 2000)
    state, effects = fs.clear(state, "tech-anna", 2000)
    assert effects == [fs.Unlock("tech-anna")] and not state.locked
    state, effects = run([(2060, 7.0), (3700, 7.0)], state)
    assert effects == []  # still warm, but the allowance runs again from the clear
    state, effects = run([(3860, 7.0)], state)
    assert state.locked


def test_clear_without_lockout_is_a_no_op():
    state, effects = fs.clear(fs.State(), "tech", 0)
    assert effects == [] and not state.locked

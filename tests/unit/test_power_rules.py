"""Mains-fail confirmation and outage length (edge.core.power)."""

from __future__ import annotations

import pytest

from edge.core import power as pw

LIM = pw.PowerLimits(fail_confirm_s=2.0, restore_confirm_s=5.0)


def feed(readings, state=None):
    state, out = state or pw.MainsState(), []
    for t, ok in readings:
        state, eff = pw.observe(state, ok, t, LIM)
        out += eff
    return state, out


def test_outage_confirmed_then_restored_with_its_length():
    state, eff = feed([(0, True), (10, False), (11, False), (12, False)])
    assert eff == [pw.MainsFailed(10)] and not state.on_mains
    state, eff = feed([(70, False), (100, True), (103, True), (105, True)], state)
    assert eff == [pw.MainsRestored(100, 90.0)] and state.on_mains


def test_blips_are_ignored_both_ways():
    state, eff = feed([(0, False), (1, True), (5, False), (6.5, True)])
    assert eff == [] and state.on_mains and state.failed_at is None
    state, eff = feed([(10, False), (13, False)], state)
    assert eff == [pw.MainsFailed(10)]
    state, eff = feed([(20, True), (22, False), (40, True), (44, True)], state)
    assert eff == [] and not state.on_mains  # the return was not confirmed yet


def test_no_data_holds_the_state():
    state, _ = feed([(0, False), (3, False)])
    state, eff = feed([(10, None), (1000, None)], state)
    assert eff == [] and not state.on_mains


def test_limits_are_checked():
    with pytest.raises(ValueError):
        pw.PowerLimits(low_v=260.0)
    with pytest.raises(ValueError):
        pw.PowerLimits(fail_confirm_s=-1)

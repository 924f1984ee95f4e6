"""Pure alarm rules: delay, hysteresis, raise-once/clear-once, offline, door, implausible sensors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.core.alarms import (
    Clear,
    DeviceOfflineRule,
    DoorOpenRule,
    Raise,
    RuleState,
    SensorRule,
    ThresholdRule,
)

HIGH = ThresholdRule("temp_high:fridge", "temperature_high", limit=8.0, delay_s=900, hysteresis=1.0)


def feed(rule, readings, state=None):
    """Feed (t, value) pairs; return the final state and [(t, effect)]."""
    state = state or RuleState()
    out = []
    for t, v in readings:
        state, effects = rule.evaluate(state, v, t)
        out += [(t, e) for e in effects]
    return state, out


def test_high_alarm_waits_for_its_delay_then_raises_once():
    _, effects = feed(HIGH, [(t, 9.0) for t in range(0, 2000, 60)])
    assert [(t, type(e)) for t, e in effects] == [(900, Raise)]
    raise_ = effects[0][1]
    assert raise_.key == "temp_high:fridge" and raise_.kind == "temperature_high"
    assert "9.0" in raise_.message and raise_.data["limit"] == 8.0


def test_a_short_excursion_below_the_delay_raises_nothing():
    readings = [(0, 9.0), (600, 9.5), (840, 7.9), (900, 9.0), (1700, 9.0)]
    _, effects = feed(HIGH, readings)
    assert effects == []  # the dip at 840 s restarted the delay


def test_clears_only_past_the_hysteresis_band():
    state, effects = feed(HIGH, [(0, 9.0), (900, 9.0)])
    assert len(effects) == 1
    state, effects = feed(HIGH, [(1000, 7.9), (1100, 7.5), (1200, 8.5), (1300, 7.1)], state)
    assert effects == []  # 7.9, 7.5 are below the limit but inside the band: still raised
    state, effects = feed(HIGH, [(1400, 7.0), (1500, 6.0)], state)
    assert [type(e) for _, e in effects] == [Clear]
    assert state.active is False


def test_no_data_neither_raises_nor_clears():
    state, effects = feed(HIGH, [(0, 9.0), (900, 9.0)])
    state, effects = feed(HIGH, [(1000, None), (5000, None), (6000, math.nan)], state)
    assert effects == [] and state.active


def test_low_alarm_mirrors_high():
    low = ThresholdRule("temp_low:fridge", "temperature_low", limit=-1.0, direction="low", delay_s=60,
                        hysteresis=1.0)
    _, effects = feed(low, [(0, -2.0), (60, -2.0), (120, -0.5), (180, 0.1)])
    assert [(t, type(e)) for t, e in effects] == [(60, Raise), (180, Clear)]


def test_bad_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        ThresholdRule("k", "x", 1.0, direction="sideways")


@given(st.lists(st.floats(min_value=-5, max_value=15, allow_nan=False), min_size=1, max_size=80))
def test_effects_always_alternate_raise_clear(values):
    rule = ThresholdRule("k", "temperature_high", 8.0, delay_s=120, hysteresis=1.0)
    state, effects = feed(rule, [(i * 60, v) for i, v in enumerate(values)])
    kinds = [type(e) for _, e in effects]
    assert all(a is not b for a, b in zip(kinds, kinds[1:], strict=False))  # never raised or cleared twice
    if kinds:
        assert kinds[0] is Raise
    assert state.active == (bool(kinds) and kinds[-1] is Raise)


def test_door_open_too_long():
    rule = DoorOpenRule(max_open_s=120)
    _, effects = feed(rule, [(0, False), (60, False), (119, False), (121, False), (200, False), (260, True)])
    assert [(t, type(e)) for t, e in effects] == [(121, Raise), (260, Clear)]
    assert effects[0][1].kind == "door_open_too_long"


def test_device_offline_is_raised_at_once_and_cleared_on_return():
    rule = DeviceOfflineRule("device_offline:bus0.shelves", "bus0.shelves")
    _, effects = feed(rule, [(0, True), (1, False), (2, False), (3, True), (4, True)])
    assert [(t, type(e)) for t, e in effects] == [(1, Raise), (3, Clear)]
    assert effects[0][1].severity == "critical" and "bus0.shelves" in effects[0][1].message


@pytest.mark.parametrize(("reading", "problem"), [
    ((math.nan, False), "not a number"),
    ((80.0, False), "outside"),
    ((4.0, True), "probe fault"),
])
def test_sensor_rule_names_the_problem(reading, problem):
    rule = SensorRule("sensor:fridge.cabinet_temp_c", "fridge.cabinet_temp_c", -30, 50)
    state, effects = rule.evaluate(RuleState(), reading, 0.0)
    assert len(effects) == 1 and problem in effects[0].message
    state, effects = rule.evaluate(state, (4.1, False), 10.0)
    assert [type(e) for e in effects] == [Clear]


def test_stuck_sensor_is_detected_and_clears_when_it_moves():
    rule = SensorRule("sensor:x", "x", stuck_after_s=3600)
    _, effects = feed(rule, [(t, 4.0) for t in range(0, 3700, 100)])
    assert [(t, type(e)) for t, e in effects] == [(3600, Raise)]
    assert "stuck" in effects[0][1].message
    state, _ = feed(rule, [(t, 4.0) for t in range(0, 3700, 100)])
    _, effects = feed(rule, [(3700, 4.1)], state)
    assert [type(e) for _, e in effects] == [Clear]

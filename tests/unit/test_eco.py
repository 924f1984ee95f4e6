"""Eco schedule: night and idle setback, door activity wakes, the food-safety band is never left."""

from __future__ import annotations

import pytest

from edge.core import eco

CFG = eco.EcoConfig(normal_setpoint_c=3.0, setback_c=1.0, limit_c=5.0, hysteresis_c=2.0, margin_c=0.3)


def test_night_window_is_eco_and_day_is_normal():
    night = eco.decide(CFG, 23.5, 3 * 3600.0, 3.2)
    assert night.eco and night.reason == "night" and not night.lights_on and night.fan_eco
    day = eco.decide(CFG, 12.0, 600.0 + CFG.wake_s, 3.2)
    assert not day.eco and day.lights_on and day.setpoint_c == 3.0 and day.reason == "day"


def test_window_wraps_midnight():
    assert eco.in_window(2.0, 22.0, 7.0) and eco.in_window(22.0, 22.0, 7.0)
    assert not eco.in_window(7.0, 22.0, 7.0) and not eco.in_window(12.0, 22.0, 7.0)
    assert eco.in_window(13.0, 12.0, 14.0) and not eco.in_window(14.0, 12.0, 14.0)


def test_door_activity_wakes_the_machine_at_night():
    m = eco.decide(CFG, 1.0, 60.0, 3.2)
    assert not m.eco and m.lights_on and m.reason == "door_activity"
    assert eco.decide(CFG, 1.0, CFG.wake_s, 3.2).eco


def test_idle_by_day_goes_eco():
    assert eco.decide(CFG, 12.0, CFG.idle_after_s, 3.2).reason == "idle"
    assert eco.decide(CFG, 12.0, None, 3.2).reason == "idle"


def test_setback_cut_in_stays_below_the_limit():
    m = eco.decide(CFG, 23.0, None, 3.0)
    assert m.setpoint_c + CFG.hysteresis_c / 2 <= CFG.limit_c - CFG.margin_c + 1e-9
    assert m.setpoint_c == pytest.approx(3.7)  # capped: 3 + 1.0 would cut in at 5.0
    high = eco.EcoConfig(normal_setpoint_c=4.5, setback_c=1.0)
    assert high.eco_setpoint_c == 4.5  # no room: eco never raises it, and never lowers it either


def test_warm_or_unknown_cabinet_forces_normal():
    assert eco.decide(CFG, 23.0, None, 4.8).reason == "cabinet_warm"
    assert eco.decide(CFG, 23.0, None, None).reason == "no_temperature"
    assert eco.decide(CFG, 23.0, None, float("nan")).reason == "no_temperature"


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        eco.EcoConfig(setback_c=-1)
    with pytest.raises(ValueError):
        eco.EcoConfig(night_start_h=25)

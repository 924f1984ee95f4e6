"""Simulated electricity meter and refrigerant charge (hw_sim.physics)."""

from __future__ import annotations

from dataclasses import replace

from hw_sim.physics import MERCHANDISER, FridgePhysics


def day(f: FridgePhysics, hours: float = 24.0) -> FridgePhysics:
    for _ in range(int(hours * 60)):
        f.step(60.0)
    return f


def test_energy_is_compressor_on_time_times_rated_power_plus_loads():
    f = day(FridgePhysics(replace(MERCHANDISER, defrost_interval_s=1e9), setpoint_c=3.0, start_c=3.0))
    p = f.p
    expected = (f.compressor_on_s * p.compressor_rated_w + 24 * 3600 * (p.lighting_w + p.fan_w)) / 3.6e6
    assert 0 < f.compressor_on_s < 24 * 3600
    assert abs(f.energy_kwh - expected) < 1e-6


def test_lights_off_and_fan_eco_use_less():
    on = day(FridgePhysics(replace(MERCHANDISER), setpoint_c=3.0, start_c=3.0))
    off = FridgePhysics(replace(MERCHANDISER), setpoint_c=3.0, start_c=3.0)
    off.lights_on, off.fan_eco = False, True
    day(off)
    assert off.compressor_on_s < on.compressor_on_s and off.energy_kwh < 0.85 * on.energy_kwh


def test_low_refrigerant_charge_lengthens_runs_and_finally_cannot_hold():
    full = day(FridgePhysics(replace(MERCHANDISER), setpoint_c=3.0, start_c=3.0))
    low = FridgePhysics(replace(MERCHANDISER), setpoint_c=3.0, start_c=3.0)
    low.refrigerant_charge = 0.5
    day(low)
    assert low.compressor_on_s > 1.3 * full.compressor_on_s
    empty = FridgePhysics(replace(MERCHANDISER), setpoint_c=3.0, start_c=3.0)
    empty.refrigerant_charge = 0.1
    assert day(empty, 6).cabinet_c > 5.0

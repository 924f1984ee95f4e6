"""Fridge thermals and load cells: deterministic, and they behave like the real thing."""

import pytest

from hw_sim.physics import ALARM_COMPRESSOR, ALARM_HIGH_TEMP, FridgePhysics, LoadCell

pytestmark = pytest.mark.timeout(20)


def run(f: FridgePhysics, seconds: float, dt: float = 60.0) -> list[tuple[float, bool]]:
    trace = []
    for _ in range(int(seconds / dt)):
        f.step(dt)
        trace.append((f.cabinet_c, f.compressor_on))
    return trace


def test_warm_fridge_pulls_down_and_regulates_around_setpoint():
    f = FridgePhysics(setpoint_c=4.0, seed=1)  # switched on at room temperature
    assert f.cabinet_c == pytest.approx(22.0)
    run(f, 4 * 3600)
    trace = run(f, 2 * 3600)
    temps = [t for t, _ in trace]
    assert 2.5 < min(temps) and max(temps) < 5.5
    duty = sum(on for _, on in trace) / len(trace)
    assert 0.05 < duty < 0.6, "the compressor cycles, it neither idles nor runs flat out"
    assert f.alarm_bits() == 0


def test_open_door_warms_the_cabinet():
    f = FridgePhysics(start_c=4.0, seed=2)
    run(f, 3600)
    before = f.cabinet_c
    f.door_open = True
    run(f, 120, dt=1.0)
    assert f.cabinet_c > before + 1.5


def test_failed_compressor_warms_and_raises_alarms():
    f = FridgePhysics(start_c=4.0, seed=3)
    run(f, 3600)
    f.compressor_failed = True
    run(f, 3 * 3600)
    assert f.cabinet_c > 4.0 + 4.0
    assert f.alarm_bits() & ALARM_HIGH_TEMP and f.alarm_bits() & ALARM_COMPRESSOR


def test_defrost_cycle_heats_the_evaporator_then_ends():
    f = FridgePhysics(start_c=4.0, seed=4)
    run(f, 3600)
    f.request_defrost()
    peak = f.evaporator_c
    for _ in range(40 * 60):
        f.step(1.0)
        peak = max(peak, f.evaporator_c)
    assert peak > 5.0 and not f.defrost_active


def test_same_seed_same_run():
    a, b = FridgePhysics(seed=7), FridgePhysics(seed=7)
    run(a, 7200)
    run(b, 7200)
    assert a.cabinet_probe_c() == b.cabinet_probe_c()


def test_load_cell_reads_net_grams_settles_and_flags_stability():
    load = {"g": 2000.0}
    cell = LoadCell(lambda: load["g"], seed=1)
    for _ in range(10):
        cell.step(0.1)
    assert cell.stable and cell.grams == pytest.approx(2000.0, abs=2.0)
    load["g"] -= 355.0  # a can is taken
    cell.step(0.1)
    assert not cell.stable, "right after a change the reading is still moving"
    for _ in range(30):
        cell.step(0.2)
    assert cell.stable and cell.grams == pytest.approx(1645.0, abs=2.0)


def test_load_cell_tare_and_calibration_factor():
    cell = LoadCell(lambda: 1000.0, seed=2, gain_error=0.02)
    for _ in range(10):
        cell.step(0.1)
    assert cell.grams == pytest.approx(1020.0, abs=2.0)  # uncalibrated: the sensor reads 2 % high
    cell.calibration_factor = 1 / 1.02
    assert cell.grams == pytest.approx(1000.0, abs=2.0)
    cell.tare()
    assert abs(cell.grams) < 2.0

"""Simulated time for a daemon driven from another process (config `[simulation]`, edge/clock.py
ScaledClock): the clock's pace and origin, and what `load_config` / `vendedge check-config` accept."""

from __future__ import annotations

import time

import pytest

from edge.cli import main
from edge.clock import ScaledClock
from edge.config import load_config
from edge.core.errors import ConfigError

BASE = '[machine]\nid = "m1"\ndata_dir = "{d}"\n[vend_board]\nport = "/dev/null"\n'


def _real_gap(seconds: float) -> None:
    """Let `seconds` of real time pass (the clock's pace against real time is the subject here)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.005)


def test_wall_counts_from_the_origin_at_the_scale_and_two_clocks_agree():
    origin = time.time() - 10.0  # the simulation started 10 real seconds ago
    a = ScaledClock(2000.0, origin, 1_800_000_000.0)
    assert a.wall() == pytest.approx(1_800_000_000.0 + 10.0 * 2000.0, abs=2000.0 * 0.5)
    _real_gap(0.05)
    b = ScaledClock(2000.0, origin, 1_800_000_000.0)  # another process, started later, same origin
    assert abs(a.wall() - b.wall()) < 2000.0 * 0.01  # both read time.time(): they agree to the call


def test_monotonic_runs_at_the_scale_and_never_goes_back():
    clock = ScaledClock(1000.0)
    r0, m0 = time.monotonic(), clock.monotonic()
    _real_gap(0.1)
    m1, r1 = clock.monotonic(), time.monotonic()
    assert (m1 - m0) == pytest.approx((r1 - r0) * 1000.0, rel=0.05)
    assert all(clock.monotonic() <= clock.monotonic() for _ in range(100))


def test_defaults_are_real_time_from_now():
    clock = ScaledClock(1.0)
    assert clock.wall() == pytest.approx(time.time(), abs=0.5)
    with pytest.raises(ValueError):
        ScaledClock(0.0)


def test_the_section_is_read_and_checked(tmp_path):
    cfg = tmp_path / "vendedge.toml"
    cfg.write_text(BASE.format(d=tmp_path) + "[simulation]\ntime_scale = 2000\norigin_unix = 1764000000.5\n"
                                              "start_wall = 1800000000\n")
    sim = load_config(cfg).simulation
    assert (sim.time_scale, sim.origin_unix, sim.start_wall, sim.active) == (2000.0, 1764000000.5, 1.8e9, True)
    cfg.write_text(BASE.format(d=tmp_path))
    assert not load_config(cfg).simulation.active  # absent on a real machine: real time
    for bad, key in (("time_scale = 0", "simulation.time_scale"), ("time_scale = 100001", "simulation.time_scale"),
                     ("time_scale = -5", "simulation.time_scale"), ('time_scale = "fast"', "simulation.time_scale"),
                     ("origin_unix = 1764000000000", "simulation.origin_unix"), ("speed = 2", "simulation.speed")):
        cfg.write_text(BASE.format(d=tmp_path) + f"[simulation]\n{bad}\n")
        with pytest.raises(ConfigError) as exc:
            load_config(cfg)
        assert exc.value.key == key, bad


def test_check_config_refuses_time_scale_zero_and_accepts_a_demo_pace(tmp_path, capsys):
    cfg = tmp_path / "vendedge.toml"
    cfg.write_text(BASE.format(d=tmp_path) + "[simulation]\ntime_scale = 0\n")
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "simulation.time_scale" in err and "1" in err and "100000" in err
    cfg.write_text(BASE.format(d=tmp_path) + "[simulation]\ntime_scale = 2000\n")
    assert main(["check-config", "--config", str(cfg)]) == 0

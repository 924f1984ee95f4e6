"""The spiral motor-current trend (edge.core.maintenance.SlotWatch) on simulated wear (hw_sim.wear):
current rises with a binding spiral and warns before the jam — earlier than the run time does —
stays quiet on healthy spirals, and is simply absent for a board that does not report current."""

from __future__ import annotations

from edge.core.alarms import Raise
from edge.core.maintenance import SlotWatch, Trend
from hw_sim.wear import DAY, Spiral


def run(spiral: Spiral, n: int, per_day: int = 8, with_current: bool = True):
    """(first current trip, first run-time trip, first jam, the raised effects) in simulated seconds."""
    w, cur, rt, jam, raised = SlotWatch(spiral.slot), None, None, None, []
    for i in range(n):
        t = i * DAY / per_day
        r = spiral.run(t)
        if r.jammed:
            jam = jam if jam is not None else t
            continue
        raised += [e for e in w.observe(r.motor_ms, r.mean_ma if with_current else None) if isinstance(e, Raise)]
        cur = t if cur is None and w.current.tripped else cur
        rt = t if rt is None and w.run_time.tripped else rt
    return cur, rt, jam, raised


def test_current_rises_with_wear_and_stays_flat_when_healthy():
    worn = Spiral("A2", wear_start_s=3 * DAY, friction_per_day=0.25, seed=3)
    healthy = Spiral("A1", seed=3)
    early = [worn.run(d * DAY).mean_ma for d in (0, 1, 2)]
    late = worn.run(6 * DAY).mean_ma
    assert max(early) < 300 < 1.8 * max(early) < late
    flat = [healthy.run(d * DAY / 8).mean_ma for d in range(400)]
    assert 200 < min(flat) and max(flat) < 400  # noise and a few catching products
    first, last = sum(flat[:100]) / 100, sum(flat[-100:]) / 100
    assert abs(last - first) < 0.03 * first  # no trend


def test_a_binding_spiral_is_flagged_by_its_current_before_it_jams_and_before_its_run_time():
    for seed in range(4):
        cur, rt, jam, raised = run(Spiral("A2", wear_start_s=3 * DAY, friction_per_day=0.25, seed=seed), 200)
        assert jam is not None and cur is not None and rt is not None
        assert cur < jam and cur <= rt and (jam - cur) > 24 * 3600
        assert len(raised) == 1 and "current" in raised[0].data["signals"]
        assert raised[0].data["current_ratio"] >= 1.3 and raised[0].data["baseline_ma"] > 0


def test_healthy_spirals_never_trip_the_current_trend():
    for seed in range(12):
        for slot in ("A1", "B5", "C3"):
            cur, rt, jam, raised = run(Spiral(slot, seed=seed), 300)
            assert cur is None and rt is None and jam is None and raised == []


def test_a_board_without_current_leaves_the_run_time_trend_alone():
    cur, rt, jam, raised = run(Spiral("A2", wear_start_s=3 * DAY, friction_per_day=0.25, seed=3), 200,
                               with_current=False)
    assert cur is None and rt is not None and rt < jam
    assert raised[0].data["signals"] == ["run_time"] and raised[0].data["baseline_ma"] is None
    w = SlotWatch("A1")
    for _ in range(30):
        w.observe(1200, 0)  # a zero figure is "not measured" too
    assert w.current.baseline is None and w.current.learn == []


def test_state_round_trip_and_a_malformed_state_relearns():
    w = SlotWatch("A1")
    for i in range(25):
        w.observe(1200 + i, 260 + i)
    again = SlotWatch("A1")
    again.restore(w.state())
    assert again.state() == w.state() and again.current.baseline == w.current.baseline
    t = Trend(20, 0.2, 1.3, 3)
    t.restore({"learn": [], "baseline": 260.0, "ewma": None, "above": 0, "tripped": False})  # half set
    assert t.baseline is None and t.ewma is None
    t.restore({"learn": "x"})
    assert t.state() == Trend(20, 0.2, 1.3, 3).state()

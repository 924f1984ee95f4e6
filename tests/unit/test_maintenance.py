"""Predictive maintenance watchers on simulated degradation and healthy noise (hw_sim.wear)."""

from __future__ import annotations

from edge.core.alarms import Clear, Raise
from edge.core.maintenance import CoolingConfig, CoolingWatch, SlotWatch
from hw_sim.wear import DAY, RefrigerantLeak, Spiral


def feed_spiral(spiral: Spiral, watch: SlotWatch, n: int, per_day: int = 8):
    raised, jam = None, None
    for i in range(n):
        t = i * DAY / per_day
        jammed, ms = spiral.vend(t)
        if jammed:
            jam = jam if jam is not None else t
            continue
        if any(isinstance(e, Raise) for e in watch.observe(ms)):
            raised = t
    return raised, jam


def test_binding_spiral_raises_before_it_jams():
    raised, jam = feed_spiral(
        Spiral("A2", wear_start_s=3 * DAY, friction_per_day=0.25, seed=3), SlotWatch("A2"), 200
    )
    assert jam is not None and raised is not None and raised < jam
    assert (jam - raised) > 12 * 3600


def test_healthy_spirals_do_not_alarm():
    for seed in range(10):
        for slot in ("A1", "B5"):
            raised, jam = feed_spiral(Spiral(slot, seed=seed), SlotWatch(slot), 300)
            assert raised is None and jam is None


def test_service_clears_and_relearns():
    w = SlotWatch("A1")
    for _ in range(20):
        w.observe(1000)
    effects = [e for ms in [2000] * 10 for e in w.observe(ms)]
    assert [type(e) for e in effects] == [Raise] and w.active
    assert w.serviced() == [Clear(w.key, "serviced")] and w.baseline_ms is None and not w.active


def cooling_run(
    run_s: float, off_s: float, days: float, watch: CoolingWatch, *, stretch_from: float | None = None
):
    """Square-wave compressor: runs of `run_s` (longer by 2x after stretch_from), sampled every 10 s."""
    t, raised = 0.0, None
    while t < days * DAY:
        run = run_s * (2.0 if stretch_from is not None and t >= stretch_from else 1.0)
        for on, length in ((True, run), (False, off_s)):
            end = t + length
            while t < end:
                t += 10.0
                if any(isinstance(e, Raise) for e in watch.observe(t, on)):
                    raised = raised if raised is not None else t
    return raised


def test_longer_compressor_runs_raise_after_the_hold():
    cfg = CoolingConfig()
    raised = cooling_run(600, 1800, 4, CoolingWatch(cfg=cfg), stretch_from=2 * DAY)
    assert raised is not None and 2 * DAY + cfg.hold_s <= raised < 2 * DAY + 12 * 3600


def test_steady_compressor_and_door_runs_do_not_alarm():
    assert cooling_run(600, 1800, 4, CoolingWatch()) is None
    w = CoolingWatch()
    for i in range(2000):  # long runs while the door is open are not judged
        w.observe(i * 10.0, True, door_open=True)
        assert not w.active or i * 10.0 > w.cfg.max_run_s


def stalled_ends(watch: CoolingWatch, days: float = 4, stall_from: float = 2 * DAY) -> list[Raise]:
    """Steady 600 s runs every 40 min sampled every 10 s, but from `stall_from` the first sample
    after each run's end comes 600 s late (a stalled poller): each run then seems to last 1200 s."""
    t, raised = 0.0, []
    while t < days * DAY:
        for on, length in ((True, 600.0), (False, 1800.0)):
            end, first = t + length, True
            while t < end:
                t += 600.0 if (t >= stall_from and not on and first) else 10.0
                first = False
                raised += [e for e in watch.observe(t, on) if isinstance(e, Raise)]
    return raised


def test_runs_whose_end_fell_in_a_sampling_gap_are_not_judged():
    assert stalled_ends(CoolingWatch()) == []
    # the same samples judged blindly would read a 2x leak: the test can fail
    assert len(stalled_ends(CoolingWatch(cfg=CoolingConfig(gap_factor=float("inf"))))) == 1


def test_a_run_already_going_when_the_watch_starts_is_not_learnt():
    w = CoolingWatch()
    for i in range(1, 300):  # on from before the first sample until 3,000 s: its start is unknown
        w.observe(i * 10.0, i * 10.0 < 3000)
    assert w.regimes == {}
    for i in range(300, 500):  # the next run, seen from start to end, is learnt
        w.observe(i * 10.0, 3600 <= i * 10.0 < 4200)
    assert w.regimes["normal"].learn == [600.0]


def test_a_run_that_never_ends_raises():
    w = CoolingWatch()
    effects = [e for i in range(1200) for e in w.observe(i * 10.0, True)]
    assert len(effects) == 1 and effects[0].data["long_run"]


def test_leak_charge_falls_linearly_and_never_below_zero():
    leak = RefrigerantLeak(start_s=DAY, loss_per_day=0.25)
    assert leak.charge(0) == 1.0 and leak.charge(3 * DAY) == 0.5 and leak.charge(10 * DAY) == 0.0

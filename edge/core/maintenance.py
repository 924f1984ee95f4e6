"""Predictive maintenance: "service soon" before a spiral jams or the cooling fails. Pure.

Two trend watchers, each learning its own healthy baseline first (no fleet constants):

- `SlotWatch` per spiral: two `Trend`s per successful vend, the board's motor run time and its
  mean motor current (when the board reports it: VEND_DONE's long form). A spiral that starts to
  bind turns slower and draws more — current more so (it follows the load torque while the speed
  sags less): each EWMA climbs above the slot's learned median. One "service soon" alarm per slot
  after `hold` consecutive vends above the trend's ratio x baseline, whichever trend trips first;
  a service (`serviced`) relearns both baselines. A board that never sends current leaves the
  current trend learning for ever: the run-time trend alone then watches the slot.
- `CoolingWatch` for the refrigeration: compressor pull-down time (how long one run takes from
  cut-in to cut-out) and duty cycle, per regime (eco/normal differ in heat load). A refrigerant
  leak lowers cooling capacity: runs get longer long before the cabinet warms. The median of the
  last `window_runs` runs (a count, not a time window: when runs grow very long a time window
  would hold too few to judge) against the learned median; raise when above `rise_ratio` for
  `hold_s`, or when one run lasts longer than `max_run_s` (it cannot reach cut-out at all). A run
  whose start or end fell in a sampling gap (more than `gap_factor` x the recent median interval
  between samples: the controller offline, the poller stalled, or a run already going when the
  watch started) is not judged: its length is not known, only a bound on it.

Both keep a JSON-able `state()` that `restore()` takes back, so the ledger can carry a learnt
baseline across a restart (edge/ledger/maintenance.py).

Time is passed in (seconds, any monotonic origin). Effects are `edge.core.alarms` Raise/Clear.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edge.core.alarms import Clear, Effect, Raise

SERVICE_SOON = "service_soon"


@dataclass(frozen=True)
class SlotConfig:
    baseline_n: int = 20  # successful vends that define the healthy median
    alpha: float = 0.2  # EWMA weight of the newest vend
    rise_ratio: float = 1.25  # run time
    hold: int = 3  # consecutive vends above the ratio before raising
    current_rise_ratio: float = 1.3  # mean motor current (noisier per vend than run time, rises faster)
    current_hold: int = 3


@dataclass
class Trend:
    """The EWMA of one per-vend figure against the median of its first ``baseline_n`` values; it
    trips after ``hold`` consecutive vends at or above ``rise_ratio`` x baseline and stays tripped
    until ``reset``. Mutable state, no I/O; ``state()``/``restore()`` carry it across a restart."""

    baseline_n: int
    alpha: float
    rise_ratio: float
    hold: int
    learn: list[float] = field(default_factory=list)
    baseline: float | None = None
    ewma: float | None = None
    above: int = 0
    tripped: bool = False

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None or self.ewma is None else self.ewma / self.baseline

    def observe(self, value: float) -> bool:
        """Feed one vend's figure; True when this vend trips the trend."""
        if self.baseline is None or self.ewma is None:
            self.learn.append(value)
            if len(self.learn) >= self.baseline_n:
                self.baseline = self.ewma = statistics.median(self.learn)
            return False
        self.ewma += self.alpha * (value - self.ewma)
        self.above = self.above + 1 if self.ewma >= self.rise_ratio * self.baseline else 0
        if self.tripped or self.above < self.hold:
            return False
        self.tripped = True
        return True

    def reset(self) -> None:
        self.learn, self.baseline, self.ewma, self.above, self.tripped = [], None, None, 0, False

    def state(self) -> dict[str, Any]:
        return {"learn": list(self.learn), "baseline": self.baseline, "ewma": self.ewma, "above": self.above,
                "tripped": self.tripped}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a ``state()``; a malformed one leaves the trend learning afresh (never half-set)."""
        try:
            learn = [float(v) for v in state["learn"]]
            baseline, ewma = _opt_float(state["baseline"]), _opt_float(state["ewma"])
            above, tripped = int(state["above"]), bool(state["tripped"])
        except (KeyError, TypeError, ValueError):
            self.reset()
            return
        if (baseline is None) != (ewma is None) or (baseline is not None and baseline <= 0):
            self.reset()
            return
        self.learn, self.baseline, self.ewma, self.above, self.tripped = learn, baseline, ewma, above, tripped


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass
class SlotWatch:
    """Trends of one spiral: motor run time and, when the board reports it, mean motor current.
    One "service soon" alarm per slot, raised by whichever trend trips first (mutable, no I/O)."""

    slot: str
    cfg: SlotConfig = field(default_factory=SlotConfig)
    run_time: Trend = field(init=False)
    current: Trend = field(init=False)
    active: bool = False

    def __post_init__(self) -> None:
        c = self.cfg
        self.run_time = Trend(c.baseline_n, c.alpha, c.rise_ratio, c.hold)
        self.current = Trend(c.baseline_n, c.alpha, c.current_rise_ratio, c.current_hold)

    @property
    def key(self) -> str:
        return f"{SERVICE_SOON}:slot:{self.slot}"

    @property
    def baseline_ms(self) -> float | None:
        return self.run_time.baseline

    @property
    def ewma_ms(self) -> float | None:
        return self.run_time.ewma

    def observe(self, motor_ms: float, mean_ma: float | None = None) -> list[Effect]:
        """Feed one successful vend: its run time and, if the board measured it, its mean current
        (None or 0: not measured — the current trend just does not learn). A Raise when a trend trips."""
        fired = ["run_time"] if self.run_time.observe(motor_ms) else []
        if mean_ma is not None and mean_ma > 0 and self.current.observe(mean_ma):
            fired.append("current")
        if self.active or not fired:
            return []
        self.active = True
        return [Raise(self.key, SERVICE_SOON, self._message(fired), "warning", self._data(fired))]

    def _message(self, fired: list[str]) -> str:
        why = []
        if "current" in fired:
            why.append(f"its motor draws {self.current.ratio or 0:.2f}x the current")
        if "run_time" in fired:
            why.append(f"the spiral turns {self.run_time.ratio or 0:.2f}x slower")
        return f"slot {self.slot}: {' and '.join(why)} of when healthy; check it for binding before it jams"

    def _data(self, fired: list[str]) -> dict[str, Any]:
        t, c = self.run_time, self.current
        return {
            "slot": self.slot,
            "signals": fired,
            "baseline_ms": None if t.baseline is None else round(t.baseline),
            "trend_ms": None if t.ewma is None else round(t.ewma),
            "ratio": None if t.ratio is None else round(t.ratio, 2),
            "baseline_ma": None if c.baseline is None else round(c.baseline),
            "trend_ma": None if c.ewma is None else round(c.ewma),
            "current_ratio": None if c.ratio is None else round(c.ratio, 2),
        }

    def serviced(self) -> list[Effect]:
        """A technician serviced the spiral: clear the alarm and learn both baselines again."""
        was = self.active
        self.run_time.reset()
        self.current.reset()
        self.active = False
        return [Clear(self.key, "serviced")] if was else []

    def state(self) -> dict[str, Any]:
        """What a restart must not forget (JSON-able): both trends and whether the alarm is up."""
        return {"run_time": self.run_time.state(), "current": self.current.state(), "active": self.active}

    def restore(self, state: dict[str, Any]) -> None:
        self.run_time.restore(state.get("run_time") or {})
        self.current.restore(state.get("current") or {})
        self.active = bool(state.get("active")) and (self.run_time.tripped or self.current.tripped)


@dataclass(frozen=True)
class CoolingConfig:
    learn_s: float = 24 * 3600.0  # healthy operation that defines the baselines
    window_runs: int = 6  # the newest clean runs judged against the baseline
    rise_ratio: float = 1.6
    hold_s: float = 2 * 3600.0
    max_run_s: float = 3 * 3600.0
    gap_factor: float = 3.0  # a gap between samples this many times the usual one hides a run's edge
    gap_history: int = 32  # the sample intervals the usual one is the median of


@dataclass
class _Regime:
    learn: list[float] = field(default_factory=list)
    baseline_s: float | None = None
    runs: deque[float] = field(default_factory=deque)  # the newest clean runs (seconds)


@dataclass
class CoolingWatch:
    """Compressor run-length and duty trends (mutable state, no I/O)."""

    name: str = "fridge"
    cfg: CoolingConfig = field(default_factory=CoolingConfig)
    regimes: dict[str, _Regime] = field(default_factory=dict)
    started: float | None = None
    run_start: float | None = None
    run_clean: bool = True  # no defrost or door opening during the run
    over_since: float | None = None
    active: bool = False
    on_s: float = 0.0
    seen_s: float = 0.0
    last_t: float | None = None
    last_on: bool = False
    gaps: deque[float] = field(default_factory=deque)  # the newest intervals between samples

    @property
    def key(self) -> str:
        return f"{SERVICE_SOON}:cooling:{self.name}"

    def _blind(self, t: float) -> bool:
        """Whether the interval since the previous sample is too long to place a run's edge in it
        (no previous sample at all counts as blind); records the interval either way."""
        if self.last_t is None:
            return True
        gap = t - self.last_t
        usual = statistics.median(self.gaps) if len(self.gaps) >= 8 else None
        self.gaps.append(gap)
        while len(self.gaps) > self.cfg.gap_history:
            self.gaps.popleft()
        return usual is not None and gap > self.cfg.gap_factor * usual

    @property
    def duty(self) -> float | None:
        return self.on_s / self.seen_s if self.seen_s > 0 else None

    def observe(
        self,
        t: float,
        compressor_on: bool,
        *,
        regime: str = "normal",
        defrost: bool = False,
        door_open: bool = False,
    ) -> list[Effect]:
        """Feed one controller sample. Runs touched by a defrost or a door opening, or with an edge in
        a sampling gap, are not judged."""
        if self.started is None:
            self.started = t
        blind = self._blind(t)
        if self.last_t is not None:
            self.seen_s += t - self.last_t
            self.on_s += (t - self.last_t) if self.last_on else 0.0
        self.last_t, self.last_on = t, compressor_on
        if defrost or door_open:
            self.run_clean = False
        if compressor_on and self.run_start is None:
            self.run_start, self.run_clean = t, not (defrost or door_open or blind)
        elif not compressor_on and self.run_start is not None:
            run, clean = t - self.run_start, self.run_clean and not blind
            self.run_start = None
            if clean:
                self._add_run(regime, t, run)
        long_run = self.run_start is not None and t - self.run_start > self.cfg.max_run_s
        return self._judge(t, regime, long_run)

    def _add_run(self, regime: str, t: float, run: float) -> None:
        r = self.regimes.setdefault(regime, _Regime())
        assert self.started is not None
        if r.baseline_s is None:
            r.learn.append(run)
            if t - self.started >= self.cfg.learn_s and len(r.learn) >= self.cfg.window_runs:
                r.baseline_s = statistics.median(r.learn)
            return
        r.runs.append(run)
        while len(r.runs) > self.cfg.window_runs:
            r.runs.popleft()

    def ratio(self, regime: str) -> float | None:
        """Median of the newest runs over the healthy median (None while learning or too few runs)."""
        r = self.regimes.get(regime)
        if r is None or r.baseline_s is None or len(r.runs) < self.cfg.window_runs:
            return None
        return statistics.median(r.runs) / r.baseline_s

    def _judge(self, t: float, regime: str, long_run: bool) -> list[Effect]:
        ratio = self.ratio(regime)
        over = long_run or (ratio is not None and ratio >= self.cfg.rise_ratio)
        if not over:
            self.over_since = None
            return []
        self.over_since = t if self.over_since is None else self.over_since
        if self.active or (t - self.over_since < self.cfg.hold_s and not long_run):
            return []
        self.active = True
        why = "a compressor run never reached cut-out" if long_run else f"compressor runs {ratio:.1f}x longer"
        data = {
            "regime": regime,
            "ratio": None if ratio is None else round(ratio, 2),
            "long_run": long_run,
            "duty": None if self.duty is None else round(self.duty, 3),
        }
        return [
            Raise(
                self.key,
                SERVICE_SOON,
                f"{self.name}: {why} than when healthy; check refrigerant charge, condenser and fans",
                "warning",
                data,
            )
        ]

    def state(self) -> dict[str, Any]:
        """What a restart keeps (JSON-able): the learnt per-regime baselines and whether the alarm is
        up. Times are monotonic and runs in progress die with the process: the window fills again."""
        baselines = {k: r.baseline_s for k, r in self.regimes.items() if r.baseline_s is not None}
        return {"baselines": baselines, "active": self.active}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a ``state()``; a malformed one is ignored (the baselines are learnt again)."""
        try:
            baselines = {str(k): float(v) for k, v in dict(state.get("baselines") or {}).items()}
        except (TypeError, ValueError):
            return
        if any(v <= 0 for v in baselines.values()):
            return
        self.regimes = {k: _Regime(baseline_s=v) for k, v in baselines.items()}
        self.active = bool(state.get("active")) and bool(baselines)

    def serviced(self) -> list[Effect]:
        """After a repair the baselines are learnt again."""
        was = self.active
        self.regimes, self.started, self.over_since, self.active = {}, None, None, False
        return [Clear(self.key, "serviced")] if was else []

"""Predictive maintenance: "service soon" before a spiral jams or the cooling fails. Pure.

Two trend watchers, each learning its own healthy baseline first (no fleet constants):

- `SlotWatch` per spiral: the board's motor run time per successful vend (and motor current when
  a board reports it). A spiral that starts to bind turns slower and draws more: the EWMA of run
  time climbs above the slot's learned median. Raise after `hold` consecutive vends above
  `rise_ratio` x baseline; a service (`serviced`) relearns the baseline.
- `CoolingWatch` for the refrigeration: compressor pull-down time (how long one run takes from
  cut-in to cut-out) and duty cycle, per regime (eco/normal differ in heat load). A refrigerant
  leak lowers cooling capacity: runs get longer long before the cabinet warms. The median of the
  last `window_runs` runs (a count, not a time window: when runs grow very long a time window
  would hold too few to judge) against the learned median; raise when above `rise_ratio` for
  `hold_s`, or when one run lasts longer than `max_run_s` (it cannot reach cut-out at all).

Time is passed in (seconds, any monotonic origin). Effects are `edge.core.alarms` Raise/Clear.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

from edge.core.alarms import Clear, Effect, Raise

SERVICE_SOON = "service_soon"


@dataclass(frozen=True)
class SlotConfig:
    baseline_n: int = 20  # successful vends that define the healthy median
    alpha: float = 0.2  # EWMA weight of the newest vend
    rise_ratio: float = 1.25
    hold: int = 3  # consecutive vends above the ratio before raising


@dataclass
class SlotWatch:
    """Vend-time trend of one slot (mutable state, no I/O)."""

    slot: str
    cfg: SlotConfig = field(default_factory=SlotConfig)
    learn: list[float] = field(default_factory=list)
    baseline_ms: float | None = None
    ewma_ms: float | None = None
    above: int = 0
    active: bool = False

    @property
    def key(self) -> str:
        return f"{SERVICE_SOON}:slot:{self.slot}"

    def observe(self, motor_ms: float) -> list[Effect]:
        """Feed the run time of one successful vend; returns a Raise when the trend crosses."""
        if self.baseline_ms is None:
            self.learn.append(motor_ms)
            if len(self.learn) >= self.cfg.baseline_n:
                self.baseline_ms = statistics.median(self.learn)
                self.ewma_ms = self.baseline_ms
            return []
        assert self.ewma_ms is not None
        self.ewma_ms += self.cfg.alpha * (motor_ms - self.ewma_ms)
        ratio = self.ewma_ms / self.baseline_ms
        self.above = self.above + 1 if ratio >= self.cfg.rise_ratio else 0
        if self.active or self.above < self.cfg.hold:
            return []
        self.active = True
        data = {
            "slot": self.slot,
            "baseline_ms": round(self.baseline_ms),
            "trend_ms": round(self.ewma_ms),
            "ratio": round(ratio, 2),
        }
        return [
            Raise(
                self.key,
                SERVICE_SOON,
                f"slot {self.slot}: spiral turns {ratio:.2f}x slower than "
                "when healthy; check it for binding before it jams",
                "warning",
                data,
            )
        ]

    def serviced(self) -> list[Effect]:
        """A technician serviced the spiral: clear the alarm and learn the baseline again."""
        was = self.active
        self.learn, self.baseline_ms, self.ewma_ms, self.above, self.active = [], None, None, 0, False
        return [Clear(self.key, "serviced")] if was else []


@dataclass(frozen=True)
class CoolingConfig:
    learn_s: float = 24 * 3600.0  # healthy operation that defines the baselines
    window_runs: int = 6  # the newest clean runs judged against the baseline
    rise_ratio: float = 1.6
    hold_s: float = 2 * 3600.0
    max_run_s: float = 3 * 3600.0


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

    @property
    def key(self) -> str:
        return f"{SERVICE_SOON}:cooling:{self.name}"

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
        """Feed one controller sample. Runs touched by a defrost or a door opening are not judged."""
        if self.started is None:
            self.started = t
        if self.last_t is not None:
            self.seen_s += t - self.last_t
            self.on_s += (t - self.last_t) if self.last_on else 0.0
        self.last_t, self.last_on = t, compressor_on
        if defrost or door_open:
            self.run_clean = False
        if compressor_on and self.run_start is None:
            self.run_start, self.run_clean = t, not (defrost or door_open)
        elif not compressor_on and self.run_start is not None:
            run, clean = t - self.run_start, self.run_clean
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

    def serviced(self) -> list[Effect]:
        """After a repair the baselines are learnt again."""
        was = self.active
        self.regimes, self.started, self.over_since, self.active = {}, None, None, False
        return [Clear(self.key, "serviced")] if was else []

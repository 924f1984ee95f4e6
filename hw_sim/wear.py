"""Slow degradation for predictive-maintenance tests: a spiral that starts to bind, a refrigerant leak.

Pure and seeded (no clock reads): the caller passes simulated seconds.

- `Spiral`: each vend runs the motor `base_ms` x (1 + friction) x noise, where friction grows
  linearly from `wear_start_s` at `friction_per_day`; a vend jams once the friction (plus the
  spread of one vend) passes 1.0, i.e. the motor stalls. A healthy spiral (rate 0) still has a
  few slow vends (a product catching on the coil) so the detectors meet realistic outliers.
  `run(t)` also gives the motor current the board measures (inrush excluded): a DC gear motor's
  current follows its load torque, so the mean climbs `base_ma` x (1 + `current_gain` x friction)
  — with the default gain a spiral about to stall draws ~3x its healthy current, near the stall
  current `stall_ma` (a healthy running current of about a third of stall is typical of 24 V
  spiral motors; the exact gain of a real spiral is an assumption, not a measurement). The peak
  rides on the mean (commutation ripple, the coil's turn) and jumps when a product catches.
  A healthy spiral's current is flat with noise. The current has its own random stream, so
  `vend(t)` gives the same run times with or without it.
- `RefrigerantLeak`: the charge falls linearly from `start_s` at `loss_per_day` (1.0 = full);
  assign `charge(t)` to `FridgePhysics.refrigerant_charge`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DAY = 86400.0


@dataclass(frozen=True)
class SpiralRun:
    """One vend as the board sees it: jammed (the motor stalled), run time, mean and peak current."""

    jammed: bool
    motor_ms: int
    mean_ma: int
    peak_ma: int


@dataclass
class Spiral:
    slot: str
    base_ms: float = 1200.0
    wear_start_s: float | None = None  # None = healthy
    friction_per_day: float = 0.0
    noise: float = 0.04
    catch_p: float = 0.03  # a product catches: one slow vend
    seed: int = 0
    base_ma: float = 260.0  # healthy mean running current of a 24 V spiral motor
    current_gain: float = 2.0  # mean current rises by this x friction (load torque)
    current_noise: float = 0.04
    stall_ma: float = 900.0  # what a stalled (jammed) motor draws until the board cuts it
    _rng: random.Random = field(init=False, repr=False)
    _amp_rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.seed}:{self.slot}")
        self._amp_rng = random.Random(f"{self.seed}:{self.slot}:current")

    def friction(self, t: float) -> float:
        if self.wear_start_s is None or t <= self.wear_start_s:
            return 0.0
        return self.friction_per_day * (t - self.wear_start_s) / DAY

    def vend(self, t: float) -> tuple[bool, int]:
        """One vend at simulated time t: (jammed, motor run ms as the board reports it)."""
        r = self.run(t)
        return r.jammed, r.motor_ms

    def run(self, t: float) -> SpiralRun:
        """One vend at simulated time t, with the motor current the board measures."""
        f = self.friction(t)
        if f > 0 and f + self._rng.gauss(0.0, 0.08) >= 1.0:
            stall = self.stall_ma * max(0.8, self._amp_rng.gauss(1.0, self.current_noise))
            return SpiralRun(True, round(self.base_ms * 0.5), round(0.85 * stall), round(stall))  # cut halfway
        slow = 1.0 + (self._rng.uniform(0.2, 0.5) if self._rng.random() < self.catch_p else 0.0)
        ms = self.base_ms * (1.0 + f) * slow * max(0.5, self._rng.gauss(1.0, self.noise))
        # a catching product loads the motor as long as it slows it; the peak shows the snag
        mean = self.base_ma * (1.0 + self.current_gain * f) * (1.0 + 0.6 * (slow - 1.0))
        mean *= max(0.5, self._amp_rng.gauss(1.0, self.current_noise))
        peak = mean * (1.25 + 1.5 * (slow - 1.0)) * max(1.0, self._amp_rng.gauss(1.0, 0.05))
        return SpiralRun(False, round(ms), round(mean), round(min(peak, self.stall_ma)))


@dataclass(frozen=True)
class RefrigerantLeak:
    start_s: float
    loss_per_day: float = 0.15

    def charge(self, t: float) -> float:
        return max(0.0, 1.0 - self.loss_per_day * max(0.0, t - self.start_s) / DAY)

"""Slow degradation for predictive-maintenance tests: a spiral that starts to bind, a refrigerant leak.

Pure and seeded (no clock reads): the caller passes simulated seconds.

- `Spiral`: each vend runs the motor `base_ms` x (1 + friction) x noise, where friction grows
  linearly from `wear_start_s` at `friction_per_day`; a vend jams once the friction (plus the
  spread of one vend) passes 1.0, i.e. the motor stalls. A healthy spiral (rate 0) still has a
  few slow vends (a product catching on the coil) so the detectors meet realistic outliers.
- `RefrigerantLeak`: the charge falls linearly from `start_s` at `loss_per_day` (1.0 = full);
  assign `charge(t)` to `FridgePhysics.refrigerant_charge`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DAY = 86400.0


@dataclass
class Spiral:
    slot: str
    base_ms: float = 1200.0
    wear_start_s: float | None = None  # None = healthy
    friction_per_day: float = 0.0
    noise: float = 0.04
    catch_p: float = 0.03  # a product catches: one slow vend
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.seed}:{self.slot}")

    def friction(self, t: float) -> float:
        if self.wear_start_s is None or t <= self.wear_start_s:
            return 0.0
        return self.friction_per_day * (t - self.wear_start_s) / DAY

    def vend(self, t: float) -> tuple[bool, int]:
        """One vend at simulated time t: (jammed, motor run ms as the board reports it)."""
        f = self.friction(t)
        if f > 0 and f + self._rng.gauss(0.0, 0.08) >= 1.0:
            return True, round(self.base_ms * 0.5)  # the board stops a stalled motor halfway
        slow = 1.0 + (self._rng.uniform(0.2, 0.5) if self._rng.random() < self.catch_p else 0.0)
        ms = self.base_ms * (1.0 + f) * slow * max(0.5, self._rng.gauss(1.0, self.noise))
        return False, round(ms)


@dataclass(frozen=True)
class RefrigerantLeak:
    start_s: float
    loss_per_day: float = 0.15

    def charge(self, t: float) -> float:
        return max(0.0, 1.0 - self.loss_per_day * max(0.0, t - self.start_s) / DAY)

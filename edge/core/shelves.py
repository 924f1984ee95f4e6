"""Stable-weight detection for a load-cell shelf. Pure: samples and times are passed in.

A shelf is *stable* when the last `window_s` seconds hold at least `min_samples` readings whose
standard deviation is at most `max_std_g` and whose spread (max − min) is at most `max_spread_g`.
Each time the stable value moves by more than `delta_g` from the previous stable value, a
`ShelfDelta` is produced — the take-and-go flow turns those into "what was taken".
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class StableSpec:
    window_s: float = 0.6  # 3+ samples at a 0.2 s poll; long enough to see a hand resting on the tray
    min_samples: int = 3
    max_std_g: float = 1.5
    max_spread_g: float = 5.0
    delta_g: float = 3.0  # a change smaller than this is noise or drift, not an item


@dataclass(frozen=True)
class ShelfDelta:
    shelf: int
    before_g: float
    after_g: float
    delta_g: float
    at: float  # time the new stable value was established


class StableDetector:
    """Sliding-window stability for one shelf."""

    def __init__(self, shelf: int, spec: StableSpec | None = None) -> None:
        self.shelf = shelf
        self.spec = spec or StableSpec()
        self._window: deque[tuple[float, float]] = deque()
        self.stable_g: float | None = None  # last established stable value
        self.stable_at: float | None = None
        self.is_stable = False

    def reset(self) -> None:
        """Forget the window (after a tare, or when the device went offline)."""
        self._window.clear()
        self.is_stable = False

    def add(self, grams: float, now: float) -> ShelfDelta | None:
        """Add one reading; returns a delta when a new stable value differs from the previous one."""
        self._window.append((now, grams))
        while self._window and now - self._window[0][0] > self.spec.window_s:
            self._window.popleft()
        values = [g for _, g in self._window]
        spec = self.spec
        self.is_stable = (len(values) >= spec.min_samples
                          and max(values) - min(values) <= spec.max_spread_g
                          and statistics.pstdev(values) <= spec.max_std_g)
        if not self.is_stable:
            return None
        mean = statistics.fmean(values)
        if self.stable_g is None:
            self.stable_g, self.stable_at = mean, now
            return None
        if abs(mean - self.stable_g) > spec.delta_g:
            delta = ShelfDelta(self.shelf, self.stable_g, mean, mean - self.stable_g, now)
            self.stable_g, self.stable_at = mean, now
            return delta
        # small drift: follow it slowly so that noise is not mistaken for an item later
        self.stable_g = mean
        return None

    def stable_since(self, t: float) -> bool:
        """Stable, with every sample in the window taken at or after `t`."""
        return self.is_stable and bool(self._window) and self._window[0][0] >= t

"""The one injectable clock. Time is stored as UTC ISO-8601; ordering uses the ledger's sequence."""

from __future__ import annotations

import datetime as dt
import time


class SystemClock:
    """Wall time for records, monotonic time for deadlines."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def now_iso(self) -> str:
        return iso(self.wall())


class ManualClock(SystemClock):
    """A clock tests and simulations move by hand (`advance`), or jump (`set`)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._wall = start
        self._mono = 1000.0

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    def set(self, wall: float) -> None:
        """Jump the wall clock (backwards or forwards); monotonic time never jumps."""
        self._wall = wall


class ScaledClock(SystemClock):
    """Simulated time for a daemon driven by a simulator in another process (config `[simulation]`):
    `time_scale` simulated seconds per real second since the real Unix time `origin_unix`, the wall
    clock reading `start_wall` at that instant. Both are read from the real clocks at every call, so two
    processes with the same origin and scale agree; monotonic time runs at the same scale (never jumps)."""

    def __init__(self, time_scale: float, origin_unix: float | None = None, start_wall: float | None = None) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, not {time_scale}")
        self.time_scale = time_scale
        self.origin_unix = time.time() if origin_unix is None else origin_unix
        self.start_wall = self.origin_unix if start_wall is None else start_wall
        self._mono0 = time.monotonic()
        self._mono_base = 1000.0 + max(0.0, self.wall() - self.start_wall)  # simulated seconds already run

    def wall(self) -> float:
        return self.start_wall + (time.time() - self.origin_unix) * self.time_scale

    def monotonic(self) -> float:
        return self._mono_base + (time.monotonic() - self._mono0) * self.time_scale


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

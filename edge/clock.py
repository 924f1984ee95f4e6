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


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""Open a device link again and again until it is there: capped exponential backoff with jitter,
the failure logged once (then quiet until it works). One helper for every driver's reconnect task."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

BACKOFF_START_S = 0.05


class Backoff:
    """Capped exponential backoff with equal jitter: delay n is in [d/2, d], d = min(cap, base·2ⁿ).

    Pure (no sleeping, no clock): the caller sleeps `next()` seconds and calls `reset()` after a
    success. The one delay policy of every retry loop: drivers' reconnects, the edge supervisor's
    restarts (`sync` may not import drivers and keeps the same rule in sync/transport/base.py)."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got base_s={base_s} cap_s={cap_s}")
        self._base, self._cap = base_s, cap_s
        self._rng = rng or random.Random()
        self.attempts = 0  # consecutive failures since the last reset

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling up to the cap."""
        delay = min(self._cap, self._base * float(2 ** min(self.attempts, 30)))
        self.attempts += 1
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def reset(self) -> None:
        """After a success: the next failure starts again from `base_s`."""
        self.attempts = 0


async def open_with_backoff(
    opener: Callable[[], Awaitable[T]], *, log: Any, event: str, max_s: float, rng: random.Random
) -> T:
    """``await opener()`` until it returns; OSError/TimeoutError wait ``0.05 s × 2^n`` (≤ ``max_s``, ±50 %)."""
    backoff, quiet = Backoff(BACKOFF_START_S, max(max_s, BACKOFF_START_S), rng), False
    while True:
        try:
            return await opener()
        except (OSError, TimeoutError) as exc:
            if not quiet:
                log.warning(event, error=str(exc))
                quiet = True
            await asyncio.sleep(backoff.next())

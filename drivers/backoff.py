"""Open a device link again and again until it is there: capped exponential backoff with jitter,
the failure logged once (then quiet until it works). One helper for every driver's reconnect task."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

BACKOFF_START_S = 0.05


async def open_with_backoff(
    opener: Callable[[], Awaitable[T]], *, log: Any, event: str, max_s: float, rng: random.Random
) -> T:
    """``await opener()`` until it returns; OSError/TimeoutError wait ``0.05 s × 2^n`` (≤ ``max_s``, ±50 %)."""
    delay, quiet = BACKOFF_START_S, False
    while True:
        try:
            return await opener()
        except (OSError, TimeoutError) as exc:
            if not quiet:
                log.warning(event, error=str(exc))
                quiet = True
            await asyncio.sleep(delay * (0.5 + 0.5 * rng.random()))
            delay = min(delay * 2, max_s)

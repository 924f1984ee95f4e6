"""A bounded queue of samples that one supervised task processes in order (temperature, power,
cooling and spiral trends). Poll and vend callbacks `offer` samples without blocking; `run` processes them forever;
`drain` returns once every sample offered so far is processed, including the one `run` is in the
middle of, so whoever drains (a test, the demo) sees their effects committed to the ledger; samples
are never processed two at a time or out of order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SampleQueue(Generic[T]):
    def __init__(self, process: Callable[[T], Awaitable[None]], maxsize: int) -> None:
        self._process = process
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=maxsize)
        self._running = False  # `run` is consuming: `drain` leaves every sample to it, in order

    def full(self) -> bool:
        return self._queue.full()

    def offer(self, sample: T) -> bool:
        """Queue `sample`, dropping the oldest one when full; True when one was dropped."""
        dropped = self._queue.full()
        if dropped:
            self._queue.get_nowait()
            self._queue.task_done()
        self._queue.put_nowait(sample)
        return dropped

    async def _one(self, sample: T) -> None:
        try:
            await self._process(sample)
        finally:
            self._queue.task_done()

    async def run(self) -> None:
        """Process samples forever (a supervised task)."""
        self._running = True
        try:
            while True:
                await self._one(await self._queue.get())
        finally:
            self._running = False

    async def drain(self) -> None:
        """Return once every sample offered so far is processed: by `run` when it is consuming (one
        at a time, in order, including the one it is in the middle of), else here."""
        while not self._running and not self._queue.empty():
            await self._one(self._queue.get_nowait())
        await self._queue.join()

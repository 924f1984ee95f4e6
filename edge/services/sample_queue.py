"""A bounded queue of samples that one supervised task processes in order (temperature, power,
cooling and spiral trends). Poll and vend callbacks `offer` samples without blocking; `run` processes them forever;
`drain` processes what is queued *and* waits for the sample `run` is in the middle of, so whoever
drains (a test, the demo) sees every effect of the samples offered so far committed to the ledger.
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
        while True:
            await self._one(await self._queue.get())

    async def drain(self) -> None:
        """Process every queued sample now, then wait for the one `run` may be processing."""
        while not self._queue.empty():
            await self._one(self._queue.get_nowait())
        await self._queue.join()

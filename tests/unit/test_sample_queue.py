"""SampleQueue: `drain` returns only once every offered sample's effect is done, including the one the
supervised `run` task is in the middle of (CI once read the ledger between the two); dropping the
oldest sample when full does not leave `drain` waiting forever."""

from __future__ import annotations

import asyncio

import pytest

from edge.services.sample_queue import SampleQueue

pytestmark = pytest.mark.timeout(10)


async def test_drain_waits_for_the_sample_run_is_processing() -> None:
    done: list[int] = []
    started = asyncio.Event()

    async def slow(x: int) -> None:
        started.set()
        await asyncio.sleep(0.2)  # a ledger transaction in flight
        done.append(x)

    q: SampleQueue[int] = SampleQueue(slow, 10)
    runner = asyncio.create_task(q.run())
    q.offer(1)
    await started.wait()  # run has taken it: the queue is empty, the effect not yet done
    await q.drain()
    assert done == [1]
    q.offer(2)
    q.offer(3)
    await q.drain()
    assert done == [1, 2, 3]  # one at a time, in order: drain does not process beside run
    runner.cancel()


async def test_a_full_queue_drops_the_oldest_and_drain_still_returns() -> None:
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    q: SampleQueue[int] = SampleQueue(keep, 2)
    assert [q.offer(i) for i in range(4)] == [False, False, True, True]
    await asyncio.wait_for(q.drain(), 1.0)
    assert seen == [2, 3]

"""Driver behaviour at the adapter's wire that the payment tests do not reach: late answers (the
adapter's lines carry no request id) are dropped, never paired with the next command."""

from __future__ import annotations

import asyncio

import pytest

from drivers.errors import DeviceTimeout
from drivers.mdb import CashlessReader, ReaderState
from hw_sim.mdb_reader import SimMdbReader

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def wired(tmp_path):
    sim = SimMdbReader(approve_delay_s=0.02)
    link = await sim.serve_pty(str(tmp_path / "ttyMDB"))
    reader = CashlessReader(link, poll_interval_s=0.02, reply_timeout_s=0.2)
    await reader.start()
    await reader.wait_connected(5)
    await reader.initialize(5)
    yield sim, reader
    await reader.stop()
    await sim.stop()


async def test_a_late_answer_is_dropped_not_taken_for_the_next_one(wired):
    sim, reader = wired
    sim.slow_answers(0.3)  # the next answer (a POLL's) comes after our 0.2 s timeout
    async with asyncio.timeout(5):
        while reader.counters["late_replies"] == 0:
            await asyncio.sleep(0.02)
    # the sale that follows pairs every answer with its own command
    sim.tap(500)
    assert await reader.wait_session(2) == 500
    await reader.request_vend(150, 101)
    assert (await reader.wait_decision(2)).approved
    assert await reader.vend_success(101)
    await reader.complete_session(2)
    assert sim.books.captured == [(101, 150)] and reader.state is ReaderState.ENABLED
    assert reader.counters["timeouts"] >= 1 and reader.counters["late_replies"] == 1


async def test_a_vend_request_that_gets_no_answer_in_time_is_not_resent(wired):
    sim, reader = wired
    sim.tap()
    await reader.wait_session(2)
    sim.slow_answers(0.3)
    with pytest.raises(DeviceTimeout):
        await reader.request_vend(150, 101)
    # the observation window is the point: a re-send would follow the 0.2 s timeout at once, and the slow
    # answer itself lands at 0.3 s; 0.4 s covers both
    await asyncio.sleep(0.4)
    assert sum(1 for line in sim.log if line.startswith("R,13,00")) == 1  # sent once, never again
    decision = await reader.cancel_vend(2)  # what the payment service does next
    if decision.approved:
        assert await reader.vend_failure()
    await reader.complete_session(2)
    assert sim.books.captured == [] and sim.books.open == 0


async def test_a_customer_cancel_on_the_reader_ends_the_session(wired):
    sim, reader = wired
    sim.tap()
    await reader.wait_session(2)
    assert sim.cancel_session()
    async with asyncio.timeout(5):
        while sim.state.value != "enabled" or reader.state is not ReaderState.ENABLED:
            await asyncio.sleep(0.02)
    assert "R,13,04" in sim.log and sim.books.approved == []  # SESSION COMPLETE, nothing sold

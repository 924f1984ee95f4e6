"""The MDB driver against a reader peer we wrote from the documents alone, over a socat pty pair."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from drivers.mdb import CashlessReader, ReaderState
from tests.support.mdb_peer import PeerReader
from tests.support.socat import socat_pair
from tests.support.waits import wait_for

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
]


@pytest.fixture
def pair(tmp_path):
    with socat_pair(tmp_path) as ends:
        yield ends


@pytest.fixture
async def wired(pair):
    host, far = pair
    peer = PeerReader(far).start()
    reader = CashlessReader(host, poll_interval_s=0.02, reply_timeout_s=0.5)
    await reader.start()
    await reader.wait_connected(5)
    yield reader, peer
    await reader.stop()
    peer.stop()


async def test_initialisation_follows_the_documented_sequence(wired):
    reader, peer = wired
    await reader.initialize(5)
    assert reader.state is ReaderState.ENABLED and reader.level == 1 and not reader.always_idle
    assert reader.config.scale == 1 and reader.config.decimals == 2 and reader.config.country == 0x1978
    assert reader.peripheral.manufacturer == "PEE" and reader.peripheral.model == "peer-reader"
    setup = [line for line in peer.lines if not line.startswith("R,12")]
    assert peer.lines[0] == "M,1"  # master mode first: no POLL before the adapter confirmed it
    assert setup == ["M,1", "M,1", *setup[2:]]  # once on connect, once more before set-up (it is volatile)
    assert setup[2] == "R,10"
    assert [line[:7] for line in setup[3:7]] == ["R,11,00", "R,11,01", "R,17,00", "R,14,01"]
    assert setup[3] == "R,11,0003000000"  # VMC level 3 asked, no display
    assert peer.violations == []


async def test_paid_vend_is_captured_once_and_session_ends(wired):
    reader, peer = wired
    await reader.initialize(5)
    peer.tap()
    assert await reader.wait_session(3) == 0xFFFF
    await reader.request_vend(180, 101)
    decision = await reader.wait_decision(3)
    assert decision.approved and decision.amount == 180
    assert await reader.vend_success(101)
    await reader.complete_session(3)
    assert peer.captured == [101] and peer.refunded == 0 and peer.state == "enabled"
    assert reader.state is ReaderState.ENABLED
    assert "R,13,0000B40065" in peer.lines and "R,13,020065" in peer.lines and "R,13,04" in peer.lines
    assert peer.violations == []


async def test_failed_drop_is_a_vend_failure_the_peer_refunds(wired):
    reader, peer = wired
    await reader.initialize(5)
    peer.tap()
    await reader.wait_session(3)
    await reader.request_vend(150, 202)
    assert (await reader.wait_decision(3)).approved
    assert await reader.vend_failure()
    await reader.complete_session(3)
    assert peer.refunded == 1 and peer.captured == []


async def test_denied_and_out_of_sequence(wired):
    reader, peer = wired
    peer.approve = False
    await reader.initialize(5)
    peer.tap()
    await reader.wait_session(3)
    await reader.request_vend(150, 303)
    assert not (await reader.wait_decision(3)).approved
    # a second VEND SUCCESS with no vend open: the peer says out of sequence and the driver reports it
    assert await reader.vend_success(303) is False
    await reader.complete_session(3)
    await reader.cash_sale(200, 404)
    await wait_for(lambda: peer.cash_sales, 3.0, what="the peer to record the cash sale")
    assert peer.captured == [] and peer.cash_sales == [(404, 200)] and peer.violations == []


async def test_an_answer_read_in_the_turn_its_deadline_passed_is_an_answer(wired):
    """The loop held up past the reply deadline with the peer's answer already there: asyncio runs the
    read and the deadline in one turn; the answer must count (before: a timeout and a resent command)."""
    reader, peer = wired
    await reader.initialize(5)
    loop = asyncio.get_running_loop()
    link = reader._link
    write, stalled = link.write, []

    def write_then_stall(data: bytes) -> None:
        write(data)
        if not stalled:  # after the deadline is set, before the answer is read: hold the loop 1 s
            stalled.append(data)
            loop.call_soon(time.sleep, 1.0)

    before = dict(reader.counters)
    link.write = write_then_stall
    await wait_for(lambda: stalled, 5.0)
    await asyncio.sleep(0.3)
    assert reader.counters["timeouts"] == before["timeouts"] and reader.counters["retries"] == before["retries"]
    assert reader.state is ReaderState.ENABLED and peer.violations == []

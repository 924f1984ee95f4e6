"""Issue 5, done-when #1: 1,000 sales through the real daemon (a subprocess) while the network to the
reference cloud flaps (a proxy drops, delays and cuts connections, and twice goes fully offline),
and the daemon is SIGKILLed twice in the middle of draining its backlog. In the end the cloud holds
exactly the ledger's 1,000 completed orders — none missing, none twice — and its last stock level
per slot equals the ledger's."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from hw_sim.vend_board import SimVendBoard, run_in_thread
from sync.refcloud import serve
from tests.support.flaky_proxy import FlakyProxy
from tests.support.run_daemon import DaemonProcess, spiral_stock, write_sync_config

TOKEN = "e2e-admin-token"
MACHINE = "demo-0001"
SECRET = b"e2e-machine-secret-0123456789"
SALES = 1_000
pytestmark = pytest.mark.timeout(150)


@dataclass
class Cloud:
    base: str
    http: aiohttp.ClientSession

    async def get(self, what: str) -> object:
        async with asyncio.timeout(10):
            async with self.http.get(f"{self.base}/admin/machines/{MACHINE}/{what}",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200, what
                return await r.json()

    async def order_count(self) -> int:
        doc = await self.get("orders")
        assert isinstance(doc, dict)
        return int(doc["count"])


@pytest.fixture
async def cloud(tmp_path: pathlib.Path) -> AsyncIterator[Cloud]:
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/admin/machines", headers={"Authorization": f"Bearer {TOKEN}"},
                                 json={"machine_id": MACHINE, "secret_hex": SECRET.hex()}) as r:
                assert r.status == 201
            yield Cloud(base, http)
    finally:
        await runner.cleanup()


def _ledger(path: pathlib.Path) -> tuple[set[str], dict[str, int], int]:
    con = sqlite3.connect(path)
    try:
        completed = {r[0] for r in con.execute("SELECT order_id FROM orders WHERE status='completed'")}
        stock = dict(con.execute("SELECT slot_id, count FROM stock").fetchall())
        other = con.execute("SELECT COUNT(*) FROM orders WHERE status!='completed'").fetchone()[0]
        return completed, stock, other
    finally:
        con.close()


async def _kill_mid_drain(daemon: DaemonProcess, cloud: Cloud, proxy: FlakyProxy, sold: int) -> int:
    """Bring the network back, wait until the cloud is visibly taking the backlog (more orders than
    before, fewer than sold, within 20–80 % of the run), SIGKILL, restart. Returns the count at kill."""
    before = await cloud.order_count()
    proxy.drop_rate = 0.05
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        n = await cloud.order_count()
        if before < n < sold and 0.2 * SALES <= n <= 0.8 * SALES:
            await daemon.kill()
            await daemon.start()
            return n
        await asyncio.sleep(0.005)
    pytest.fail(f"the drain never reached the kill window (cloud had {before}, sold {sold})")


async def _sell(daemon: DaemonProcess, slots: list[str], start: int, stop: int) -> None:
    for i in range(start, stop):
        out = await daemon.ask(f"sell {slots[i % len(slots)]}")
        assert out.get("status") == "completed", (i, out)


async def _wait_synced(daemon: DaemonProcess, cloud: Cloud, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await daemon.ask("backlog"))["backlog"] == 0 and await cloud.order_count() >= SALES:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"backlog not drained: {await daemon.ask('backlog')}, {await daemon.ask('sync_status')}")


async def test_1000_sales_flaky_network_two_sigkills_cloud_holds_exactly_the_ledger(
        tmp_path: pathlib.Path, cloud: Cloud) -> None:
    t0 = time.monotonic()
    port = int(cloud.base.rsplit(":", 1)[1])
    proxy = FlakyProxy("127.0.0.1", port, seed=5, drop_rate=0.05, cut_rate=0.2, delay_rate=0.1,
                       max_delay_s=0.02)
    await proxy.start()
    state = tmp_path / "state"
    cfg = write_sync_config(state, board_port=str(tmp_path / "ttyVEND"), url=f"http://127.0.0.1:{proxy.port}",
                            secret=SECRET, capacity=60, batch_max_records=50, poll_wait_s=1.0)
    spiral = spiral_stock(state)
    sim = SimVendBoard(dict(spiral), motor_ms=1200, speed=600, seed=3)
    handle = run_in_thread(sim, link_path=str(tmp_path / "ttyVEND"))
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log")
    slots = sorted(spiral)
    kills: list[int] = []
    try:
        await daemon.start()
        assert set((await daemon.ask("restock")).values()) == {60}
        # flaky link, then an outage while selling, then the drain is cut by a power loss — twice
        await _sell(daemon, slots, 0, 150)
        proxy.drop_rate = 1.0
        await _sell(daemon, slots, 150, 450)
        kills.append(await _kill_mid_drain(daemon, cloud, proxy, 450))
        await _sell(daemon, slots, 450, 550)
        proxy.drop_rate = 1.0
        await _sell(daemon, slots, 550, SALES)
        kills.append(await _kill_mid_drain(daemon, cloud, proxy, SALES))
        await _wait_synced(daemon, cloud, 60)
        sync_status = await daemon.ask("sync_status")
        assert await daemon.stop() == 0
        dispensed = handle.call(lambda: sim.total_dispensed)
    finally:
        await daemon.kill()
        handle.stop()
        await proxy.stop()

    completed, stock, not_completed = _ledger(state / "data" / "ledger.sqlite3")
    assert len(completed) == SALES and not_completed == 0 and dispensed == SALES
    record_ids = await cloud.get("record_ids")
    assert isinstance(record_ids, dict)
    order_records = [r for r in record_ids["record_ids"] if r.startswith("order-")]
    cloud_ids = [r.removeprefix("order-").rsplit("-", 1)[0] for r in order_records]
    assert len(cloud_ids) == len(set(cloud_ids)) == SALES  # none twice
    assert set(cloud_ids) == completed  # none missing, none foreign
    orders = await cloud.get("orders")
    assert isinstance(orders, dict) and orders["count"] == SALES
    assert sum(v["qty"] for v in orders["by_sku"].values()) == SALES
    assert await cloud.get("stock") == stock  # the cloud's last level per slot is the ledger's
    assert sum(spiral[s] - stock[s] for s in spiral) == SALES
    assert all(0.2 * SALES <= k <= 0.8 * SALES for k in kills) and len(kills) == 2
    assert proxy.stats.dropped > 0 and proxy.stats.cut > 0  # the link really flapped
    elapsed = time.monotonic() - t0
    print(f"\nsync e2e: {SALES} sales in {elapsed:.1f}s, kills at cloud order counts {kills}, "
          f"proxy {proxy.stats.connections} conns / {proxy.stats.dropped} drops / {proxy.stats.cut} cuts / "
          f"{proxy.stats.delayed} delays, client {sync_status}")
    assert elapsed < 90

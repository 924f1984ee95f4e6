"""Environment faults: a cloud answering 500 / hanging / slow, the wall clock jumping both ways, and
the disk filling up under the ledger. Sales go on (or are refused cleanly), nothing is lost or
duplicated, and everything recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pathlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from edge.clock import ManualClock
from edge.core.errors import LedgerError, SaleRefused
from edge.ledger import repo
from sync.refcloud import serve
from tests.reliability.faulty_cloud import FaultyCloud
from tests.reliability.harness import MACHINE_ID, SECRET, TOKEN
from tests.reliability.inproc import InprocRig, start_inproc

pytestmark = pytest.mark.timeout(90)


class Cloud:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http

    async def get(self, path: str) -> Any:
        async with self.http.get(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def record_ids(self) -> list[str]:
        return list((await self.get(f"/admin/machines/{MACHINE_ID}/record_ids"))["record_ids"])


@pytest.fixture
async def cloud(tmp_path: pathlib.Path) -> AsyncIterator[Cloud]:
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.sqlite3"), TOKEN, shutdown_timeout=0.5)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/admin/machines", headers={"Authorization": f"Bearer {TOKEN}"},
                                 json={"machine_id": MACHINE_ID, "secret_hex": SECRET}) as r:
                assert r.status == 201
            yield Cloud(url, http)
    finally:
        await runner.cleanup()


async def _backlog(rig: InprocRig) -> int:
    row = await rig.daemon.db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE acked_at IS NULL")  # type: ignore[union-attr]
    return int(row["n"]) if row else -1


async def _outbox_ids(rig: InprocRig) -> set[str]:
    return {r["record_id"] for r in await rig.daemon.db.fetchall("SELECT record_id FROM outbox")}  # type: ignore[union-attr]


async def _synced(rig: InprocRig) -> bool:
    return await _backlog(rig) == 0


async def test_cloud_500_hang_and_slow_sales_continue_backlog_grows_then_drains(
        tmp_path: pathlib.Path, cloud: Cloud) -> None:
    async with FaultyCloud(cloud.url, slow_s=0.8) as proxy:
        # the 30 s production deadline scaled down: a hung request fails after 1 s, a slow (0.8 s) one passes
        rig = await start_inproc(tmp_path / "m", sync_url=proxy.url, sync_extra="request_timeout_s = 1")
        try:
            await rig.wait_for(lambda: _synced(rig), timeout_s=20, what="first sync")
            sale_s = []
            for i, mode in enumerate(["500"] * 4 + ["hang"] * 4 + ["slow"] * 4):
                proxy.mode = mode
                t0 = time.monotonic()
                assert (await rig.machine.sell(f"D{i % 6 + 1}", f"card:{i}"))["status"] == "completed"
                sale_s.append(time.monotonic() - t0)
                if i in (3, 7):  # each fault really met the sync client before the next one starts
                    await rig.wait_for(lambda m=mode: proxy.seen[m] >= 1, timeout_s=20, what=f"a {mode} answer")
                if i == 7:  # after 500s and hangs: nothing of the 8 sales reached the cloud
                    assert await _backlog(rig) >= 8
                    assert not [r for r in await cloud.record_ids() if r.startswith("order-")]
            await rig.wait_for(lambda: proxy.seen["slow"] >= 1, timeout_s=20, what="a slow answer")
            assert max(sale_s) < 1.0  # the cloud being down or slow never holds a customer up
            assert proxy.seen["500"] >= 1 and proxy.seen["hang"] >= 1
            proxy.mode = "ok"
            await rig.wait_for(lambda: _synced(rig), timeout_s=40, what="the backlog to drain")
            ids = await cloud.record_ids()
            assert len(ids) == len(set(ids)) and set(ids) == await _outbox_ids(rig)
            orders = await cloud.get(f"/admin/machines/{MACHINE_ID}/orders")
            assert orders["count"] == 12
        finally:
            await rig.stop()


async def test_clock_jumps_keep_order_and_lose_nothing(tmp_path: pathlib.Path, cloud: Cloud) -> None:
    now = time.time()
    clock = ManualClock(start=now)
    rig = await start_inproc(tmp_path / "m", sync_url=cloud.url, clock=clock)
    try:
        for jump in (0, -2 * 86400, +365 * 86400, -3600, 0):
            clock.set(now + jump)
            for slot in ("E1", "E2"):
                assert (await rig.machine.sell(slot, "card:t"))["status"] == "completed"
        db = rig.daemon.db
        assert db is not None
        orders = await db.fetchall("SELECT seq, created_at FROM orders ORDER BY rowid")
        assert len(orders) == 10
        assert [o["seq"] for o in orders] == sorted({o["seq"] for o in orders})  # strictly increasing
        assert [o["created_at"] for o in orders] != sorted(o["created_at"] for o in orders)  # time did jump
        outbox = [r["seq"] for r in await db.fetchall("SELECT seq FROM outbox ORDER BY rowid")]
        assert outbox == sorted(set(outbox))
        await rig.wait_for(lambda: _synced(rig), timeout_s=20, what="sync")
        ids = await cloud.record_ids()
        assert len(ids) == len(set(ids)) and set(ids) == await _outbox_ids(rig)
        # the cloud orders stock updates by sequence, not by clock: its view ends where the machine's is
        cloud_stock = await cloud.get(f"/admin/machines/{MACHINE_ID}/stock")
        for slot in ("E1", "E2"):
            assert cloud_stock[slot] == (await repo.stock(db))[slot].count == rig.sim.stock[slot] == 3
    finally:
        await rig.stop()


@contextlib.contextmanager
def small_disk(path: pathlib.Path, size: str = "3m") -> Iterator[bool]:
    """A size-capped tmpfs at `path` (root only); yields False when it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, timeout=10)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def _fill(path: pathlib.Path) -> pathlib.Path:
    filler = path / "filler.bin"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: close() has nothing left to fail on
        chunk = b"\0" * 4096
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def _fill_ledger(rig: InprocRig, disk: pathlib.Path, tmpfs: bool) -> pathlib.Path | None:
    """Make the next ledger growth fail: fill the tmpfs, or cap SQLite's page count where no mount."""
    db = rig.daemon.db
    assert db is not None
    await db.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what SQLite's auto-checkpoint does anyway
    if tmpfs:
        return _fill(disk)
    pages = (await db.fetchone("PRAGMA page_count"))[0]  # type: ignore[index]
    await db.db.execute(f"PRAGMA max_page_count={pages}")
    return None


async def test_disk_full_refuses_sales_cleanly_and_recovers(tmp_path: pathlib.Path) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk) as tmpfs:
        rig = await start_inproc(tmp_path / "m", data_dir=disk / "data")
        try:
            assert (await rig.machine.sell("A3", "card:1"))["status"] == "completed"
            filler = await _fill_ledger(rig, disk, tmpfs)
            refused = 0
            for i in range(20):
                try:
                    await rig.machine.sell(f"B{i % 6 + 1}", f"card:full{i}")
                except (LedgerError, SaleRefused):
                    refused += 1
            assert refused >= 1, "the disk never filled up"
            await _consistent(rig)  # whatever went through is whole; what was refused never dispensed
            if filler is not None:
                filler.unlink()
            else:
                await rig.daemon.db.db.execute("PRAGMA max_page_count=1073741823")  # type: ignore[union-attr]
            for i in range(3):
                assert (await rig.machine.sell("C4", f"card:back{i}"))["status"] == "completed"
            await _consistent(rig)
        finally:
            (disk / "filler.bin").unlink(missing_ok=True)  # a failed assertion above must not leave it full
            await rig.stop()


async def _consistent(rig: InprocRig) -> None:
    db = rig.daemon.db
    assert db is not None and await db.integrity_ok()
    assert await rig.completed_by_slot() == {s: n for s, n in rig.sim.dispensed.items() if n}
    open_rows = await db.fetchall("SELECT board_seq FROM vend_journal WHERE state != 'done'")
    assert not open_rows
    stock = await repo.stock(db)
    assert all(stock[s].count == rig.sim.stock[s] for s in rig.sim.stock)


async def test_disk_full_between_dispense_and_result_is_settled_not_forgotten(tmp_path: pathlib.Path) -> None:
    """The disk fills while the spiral turns: the item fell, but its result cannot be written. The
    journal entry must then be treated as unknown (no further sales until it is settled) and be
    settled from the board once space returns — never left open while the next customers buy."""
    disk = tmp_path / "disk"
    with small_disk(disk) as tmpfs:
        if not tmpfs:
            pytest.skip("needs a size-capped tmpfs (root)")
        rig = await start_inproc(tmp_path / "m", data_dir=disk / "data", motor_ms=4000)  # 0.2 s motor
        try:
            assert rig.daemon.db is not None
            await rig.daemon.db.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sale = asyncio.create_task(rig.machine.sell("A5", "card:1"))
            await rig.wait_for(lambda: rig.sim.vend_frames_received == 1, what="the VEND frame")
            filler = _fill(disk)
            with contextlib.suppress(LedgerError):
                await sale
            await rig.wait_for(lambda: rig.sim.total_dispensed == 1, what="the item to fall")
            with pytest.raises((LedgerError, SaleRefused)):
                await rig.machine.sell("A6", "card:2")  # refused while the disk is full
            filler.unlink()
            await rig.wait_for(lambda: rig.machine.vend.unreconciled == 0, what="settling")
            with contextlib.suppress(SaleRefused):
                await rig.machine.sell("A6", "card:3")
            await rig.wait_for(lambda: _no_open_journal(rig), timeout_s=5, what="the open journal entry to settle")
            await _consistent(rig)
        finally:
            await rig.stop()


async def _no_open_journal(rig: InprocRig) -> bool:
    rows = await rig.daemon.db.fetchall("SELECT 1 FROM vend_journal WHERE state != 'done'")  # type: ignore[union-attr]
    return not rows

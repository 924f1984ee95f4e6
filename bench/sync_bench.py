"""Sync throughput: drain an outbox backlog into the reference cloud over loopback.

    .venv/bin/python bench/sync_bench.py [--quick] [--fleet N]

`run(quick)` → records_per_s (target ≥ 5,000/s) for the REAL ledger outbox: `LedgerOutbox` over a
SQLite ledger file (WAL, synchronous=FULL, as the daemon opens it) pre-filled with 100,000 records
(quick: 20,000), drained by `SyncClient.push_once` in batches of 500 (the daemon's default);
rss_mb_start/end/peak of this (daemon-side) process show memory stays flat because only one batch
is ever held. `memory` holds the same drain from an in-memory outbox (protocol + cloud cost alone).
`run_fleet(machines, quick)` → records_per_s and ack_p95_ms with many machines pushing at once.
The cloud runs as its own process (`python -m sync.refcloud`), as it would in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import structlog

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.core.ports import Command, CommandResult, OutboxPort, OutboxRecord  # noqa: E402
from edge.ledger.db import LedgerDB  # noqa: E402
from edge.ledger.outbox import LedgerOutbox  # noqa: E402
from sync.client import SyncClient  # noqa: E402

TOKEN = "bench-admin-token"


class BenchOutbox:
    """In-memory OutboxPort; records are inserted in drain order so a batch is O(batch)."""

    def __init__(self, records: list[OutboxRecord]) -> None:
        self.pending = {r.record_id: r for r in sorted(records, key=lambda r: (r.priority, r.seq))}

    async def fetch_batch(self, limit: int, max_bytes: int) -> list[OutboxRecord]:
        out: list[OutboxRecord] = []
        for r in self.pending.values():
            if len(out) >= limit:
                break
            out.append(r)
        return out

    async def ack(self, record_ids: list[str]) -> None:
        for rid in record_ids:
            self.pending.pop(rid, None)

    async def park(self, record_id: str, reason: str) -> None:
        self.pending.pop(record_id, None)

    async def backlog(self) -> int:
        return len(self.pending)


class _NoConfig:
    async def current_version(self) -> int:
        return 0

    async def apply_config(self, version: int, doc: Mapping[str, Any]) -> None:
        return None

    async def config_rejected(self, version: int, reason: str) -> None:
        return None


class _NoCommands:
    async def handle(self, command: Command) -> CommandResult:
        return CommandResult(command.command_id, "ok")


def make_records(n: int, machine: str = "m") -> list[OutboxRecord]:
    """A realistic mix: 1 order, 1 stock, 8 telemetry per 10 records."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for i in range(n):
        if i % 10 == 0:
            kind, prio = "order", 0
            payload: dict[str, Any] = {
                "order_id": f"{machine}-o{i}", "currency": "EUR", "total": 360, "method": "card",
                "lines": [{"sku_id": "cola", "slot_id": "A1", "qty": 2, "unit_price": 180}]}
        elif i % 10 == 1:
            kind, prio = "stock", 1
            payload = {"levels": {"A1": 7, "A2": 3, "B1": 9, "B2": 0}}
        else:
            kind, prio = "telemetry", 5
            payload = {"t_c": 4.1, "door": "closed", "compressor": True, "shelf_g": [1200, 980, 1410, 760]}
        out.append(OutboxRecord(f"{machine}-r{i}", i, kind, now, payload, priority=prio))
    return out


def _rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def cloud_process() -> AsyncIterator[str]:
    """The reference cloud in its own process on a free loopback port."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sync.refcloud", "--db", f"{tmp}/cloud.db", "--port", str(port),
            "--admin-token", TOKEN, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            async with asyncio.timeout(20):
                while True:
                    try:
                        _, w = await asyncio.open_connection("127.0.0.1", port)
                        w.close()
                        break
                    except OSError:
                        await asyncio.sleep(0.05)
            yield base
        finally:
            proc.terminate()
            async with asyncio.timeout(10):
                await proc.wait()


async def _register(base: str, machine_ids: list[str]) -> dict[str, bytes]:
    out = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for m in machine_ids:
            async with asyncio.timeout(10):
                async with http.post(f"{base}/admin/machines", json={"machine_id": m}) as r:
                    out[m] = bytes.fromhex((await r.json())["secret_hex"])
    return out


async def _drain(client: SyncClient, outbox: OutboxPort, latencies: list[float]) -> None:
    while await outbox.backlog():
        t0 = time.perf_counter()
        await client.push_once()
        latencies.append(time.perf_counter() - t0)


async def _run_memory(base: str, secret: bytes, n: int) -> dict[str, Any]:
    rss_start = _rss_mb()
    outbox = BenchOutbox(make_records(n, "bench1"))
    lat: list[float] = []
    async with SyncClient(base, "bench1", secret, outbox, _NoConfig(), _NoCommands()) as client:
        t0 = time.perf_counter()
        await _drain(client, outbox, lat)
        elapsed = time.perf_counter() - t0
    return {"records": n, "seconds": round(elapsed, 2), "records_per_s": round(n / elapsed),
            "batches": len(lat), "batch_p95_ms": round(_p95(lat) * 1000, 1),
            "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(_rss_mb(), 1)}


async def prefill_ledger(db: LedgerDB, n: int, machine: str = "ledger1", chunk: int = 5_000) -> None:
    """Queue `n` records (the make_records mix) in the ledger outbox, as sales would have."""
    for start in range(0, n, chunk):
        records = make_records(min(chunk, n - start), f"{machine}-{start}")
        async with db.tx() as tx:
            rows = [(r.record_id, tx.next_seq(), r.kind, r.priority, tx.now,
                     json.dumps(dict(r.payload), separators=(",", ":"))) for r in records]
            await tx.db.executemany("INSERT INTO outbox(record_id, seq, kind, priority, created_at, payload) "
                                    "VALUES (?,?,?,?,?,?)", rows)


async def _run_ledger(base: str, secret: bytes, n: int, tmp: str) -> dict[str, Any]:
    db = await LedgerDB.open(f"{tmp}/ledger.sqlite3")
    try:
        await prefill_ledger(db, n)
        outbox = LedgerOutbox(db)
        assert await outbox.backlog() == n
        rss_start = peak = _rss_mb()
        lat: list[float] = []
        async with SyncClient(base, "ledger1", secret, outbox, _NoConfig(), _NoCommands(),
                              batch_max_records=500) as client:
            t0 = time.perf_counter()
            while True:  # push_once reports 0 once the outbox is empty (it re-counts the backlog itself)
                t1 = time.perf_counter()
                if not await client.push_once():
                    break
                lat.append(time.perf_counter() - t1)
                peak = max(peak, _rss_mb())
            elapsed = time.perf_counter() - t0
        acked = await db.fetchone("SELECT COUNT(*) FROM outbox WHERE acked_at IS NOT NULL")
        size_mb = pathlib.Path(db.path).stat().st_size / 1e6
    finally:
        await db.close()
    return {"records": n, "acked": int(acked[0]) if acked else 0, "seconds": round(elapsed, 2),
            "records_per_s": round(n / elapsed), "batches": len(lat),
            "batch_p95_ms": round(_p95(lat) * 1000, 1), "ledger_mb": round(size_mb, 1),
            "rss_mb_start": round(rss_start, 1), "rss_mb_peak": round(peak, 1),
            "rss_mb_end": round(_rss_mb(), 1)}


async def _run(n: int) -> dict[str, Any]:
    """The ledger drain is the headline figure; the in-memory drain is kept beside it."""
    async with cloud_process() as base:
        secrets = await _register(base, ["bench1", "ledger1"])
        with tempfile.TemporaryDirectory() as tmp:
            ledger = await _run_ledger(base, secrets["ledger1"], n, tmp)
        memory = await _run_memory(base, secrets["bench1"], n)
    return {**ledger, "target_records_per_s": 5000, "outbox": "ledger", "memory": memory}


async def _run_fleet(machines: int, per_machine: int) -> dict[str, Any]:
    async with cloud_process() as base:
        ids = [f"fleet{i:04d}" for i in range(machines)]
        secrets = await _register(base, ids)
        lat: list[float] = []
        clients = [(SyncClient(base, m, secrets[m], BenchOutbox(make_records(per_machine, m)),
                               _NoConfig(), _NoCommands(), batch_max_records=50)) for m in ids]
        t0 = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as tg:
                for c in clients:
                    tg.create_task(_drain(c, c._outbox, lat))  # noqa: SLF001 - bench owns the outbox
            elapsed = time.perf_counter() - t0
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    total = machines * per_machine
    return {"machines": machines, "records": total, "seconds": round(elapsed, 2),
            "records_per_s": round(total / elapsed), "ack_p95_ms": round(_p95(lat) * 1000, 1),
            "pushes": len(lat)}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] if ordered else 0.0


def _quiet() -> None:
    """Per-request info logs would measure the console, and mix into the JSON on stdout."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def run(quick: bool) -> dict[str, Any]:
    """Drain a 100,000-record backlog (quick: 20,000) from one machine's ledger (and from memory)."""
    _quiet()
    return asyncio.run(_run(20_000 if quick else 100_000))


def run_fleet(machines: int = 200, quick: bool = False) -> dict[str, Any]:
    """`machines` machines push at once, 50 records per request (quick: 100 each, else 500)."""
    _quiet()
    return asyncio.run(_run_fleet(machines, 100 if quick else 500))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fleet", type=int, default=200, help="machines for run_fleet (0: skip)")
    args = p.parse_args()
    result = {"drain": run(args.quick)}
    if args.fleet:
        result["fleet"] = run_fleet(args.fleet, args.quick)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

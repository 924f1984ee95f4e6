"""The real daemon in a subprocess, driven line by line on stdin (reliability harness only).

    python -m tests.reliability.daemon_proc CONFIG

Like tests/support/run_daemon.py, plus what the reliability harness needs: secrets (so sync can be
on), `arm POINT[:N]` to arm a crash point after setup, `wait_synced` and `planogram`.
stdin lines: `sell SLOT`, `restock SLOT [COUNT]`, `status`, `wait_reconciled`, `wait_synced`,
`planogram`, `quiet`, `arm SPEC`,
`advance SECONDS` (with VENDEDGE_MANUAL_CLOCK=1), `retention`, `stats`, `quit`. Each answer is one JSON line on stdout; the first is {"ready": true}.
A crash point or SIGKILL ends the process like a power cut.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any

from edge import crashpoints
from edge.clock import ManualClock
from edge.config import load_config, load_secrets
from edge.core.errors import EdgeError, SaleRefused
from edge.daemon import Daemon
from edge.ledger import repo
from edge.logs import setup_logging


async def _until(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            while not await predicate():
                await asyncio.sleep(step_s)
    except TimeoutError:
        return False
    return True


async def _command(daemon: Daemon, cmd: str, arg: str) -> Any:
    machine = daemon.machine
    assert machine is not None and daemon.board is not None and daemon.db is not None
    if cmd == "sell":
        return await machine.sell(arg, "card:test")
    if cmd == "restock":
        slot, _, count = arg.partition(" ")
        return await machine.restock(slot, int(count) if count else None, "test")
    if cmd == "status":
        return await machine.status()
    if cmd == "wait_reconciled":
        await daemon.board.wait_connected(5)

        async def settled() -> bool:
            return not machine.vend.unreconciled
        await _until(settled, 10)
        return {"unreconciled": machine.vend.unreconciled}
    if cmd == "wait_synced":
        sync = daemon.sync
        if sync is None:
            return {"backlog": None}
        sync.notify()

        async def drained() -> bool:
            row = await daemon.db.fetchone(  # type: ignore[union-attr]
                "SELECT COUNT(*) AS n FROM outbox WHERE acked_at IS NULL AND parked_reason IS NULL")
            return row is not None and row["n"] == 0
        await _until(drained, float(arg or 15), 0.1)
        row = await daemon.db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE acked_at IS NULL")
        return {"backlog": row["n"] if row else None}
    if cmd == "planogram":
        p = await repo.current_planogram(daemon.db)
        return {"version": p.version if p else None,
                "prices": {k: s.price.amount for k, s in p.skus.items()} if p else {}}
    if cmd == "quiet":  # wait until no transaction has committed for a while (start-up work done)
        last, still = -1, 0.0
        while still < 0.3:
            seq = daemon.db._seq
            still = still + 0.05 if seq == last else 0.0
            last = seq
            await asyncio.sleep(0.05)
        return {"seq": last}
    if cmd == "advance":  # accelerated time (VENDEDGE_MANUAL_CLOCK=1): move the injected clock
        assert isinstance(daemon.clock, ManualClock), "start with VENDEDGE_MANUAL_CLOCK=1"
        daemon.clock.advance(float(arg))
        return {"now": daemon.clock.now_iso()}
    if cmd == "retention":
        report = await daemon.retention.run_once()
        return dataclasses.asdict(report)
    if cmd == "stats":
        return _stats()
    if cmd == "arm":
        crashpoints.arm(arg)
        return {"armed": arg}
    raise ValueError(f"unknown command {cmd!r}")


def _stats() -> dict[str, Any]:
    """What a soak watches: resident memory, open file descriptors, live asyncio tasks."""
    rss_kb = 0
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return {"rss_kb": rss_kb, "fds": len(os.listdir("/proc/self/fd")), "tasks": len(asyncio.all_tasks())}


async def main(config_path: str) -> None:
    cfg = load_config(config_path)
    secrets = load_secrets(cfg.machine.secrets_file) if cfg.machine.secrets_file else None
    setup_logging(cfg.machine.id, level="error", fmt="json", stream=sys.stderr)
    clock = ManualClock(start=time.time()) if os.environ.get("VENDEDGE_MANUAL_CLOCK") else None
    daemon = Daemon(cfg, secrets, clock=clock)
    await daemon.start()
    await daemon.board.wait_connected(10)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := (await reader.readline()).decode().strip():
        cmd, _, arg = line.partition(" ")
        if cmd == "quit":
            break
        try:
            out = await _command(daemon, cmd, arg)
        except SaleRefused as exc:
            out = {"refused": exc.reason}
        except (EdgeError, ValueError) as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out, default=str), flush=True)
    await daemon.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

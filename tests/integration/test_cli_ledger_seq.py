"""Sequence numbers stay unique and monotonic when two writers share the ledger file
(the daemon and `vendedge user add` run at the same time, each with its own connection)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from edge.ledger.db import LedgerDB


async def _seqs(db: LedgerDB, table: str) -> list[int]:
    return [r["seq"] for r in await db.fetchall(f"SELECT seq FROM {table} ORDER BY rowid")]


def _assert_monotonic(seqs: list[int]) -> None:
    assert len(seqs) == len(set(seqs)), f"duplicate seq numbers: {sorted(seqs)}"
    assert seqs == sorted(seqs), "seq numbers go backwards in commit order"


async def test_two_connections_writing_concurrently_never_share_a_seq(tmp_path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    a, b = await LedgerDB.open(path), await LedgerDB.open(path)
    try:
        async def writer(db: LedgerDB, name: str) -> None:
            for i in range(40):
                async with db.tx() as tx:
                    await tx.event(f"{name}_{i}", {"i": i})
                await asyncio.sleep(0)  # the scenario: the two writers take turns

        await asyncio.gather(writer(a, "daemon"), writer(b, "cli"))
        events, outbox = await _seqs(a, "events"), await _seqs(a, "outbox")
    finally:
        await a.close()
        await b.close()
    assert len(events) == 80 and len(outbox) == 80
    _assert_monotonic(events)
    _assert_monotonic(outbox)


async def test_user_add_in_another_process_while_the_daemon_side_writes(tmp_path) -> None:
    """The real CLI in a second process, while this process keeps its connection open and writes."""
    state = tmp_path
    (state / "data").mkdir()
    cfg = state / "vendedge.toml"
    cfg.write_text(f'[machine]\nid = "m1"\ndata_dir = "{state / "data"}"\n[vend_board]\nport = "/dev/null"\n')
    db = await LedgerDB.open(str(state / "data" / "ledger.sqlite3"))
    try:
        async with db.tx() as tx:
            await tx.event("daemon_started", {})
        env = {**os.environ, "NO_COLOR": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.cli", "user", "add", "tech2", "--password-stdin", "--config", str(cfg),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        writes = 0

        async def keep_writing() -> None:
            nonlocal writes
            while proc.returncode is None:
                async with db.tx() as tx:
                    await tx.event("telemetry", {"n": writes})
                writes += 1
                await asyncio.sleep(0.005)  # the scenario: the daemon side writes every 5 ms meanwhile

        writer = asyncio.create_task(keep_writing())
        out, err = await asyncio.wait_for(proc.communicate(b"a-long-password\n"), 60)
        await writer
        assert proc.returncode == 0, err.decode()
        assert b"added tech2" in out
        async with db.tx() as tx:  # the daemon side writes again after the CLI is gone
            await tx.event("after_cli", {})
        events, outbox = await _seqs(db, "events"), await _seqs(db, "outbox")
        kinds = [r["kind"] for r in await db.fetchall("SELECT kind FROM events")]
    finally:
        await db.close()
    assert "audit" in kinds and writes > 0
    _assert_monotonic(events)
    _assert_monotonic(outbox)

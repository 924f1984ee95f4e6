"""Run the real daemon in a subprocess with a line-based control channel on stdin (tests only).

    python -m tests.support.run_daemon CONFIG
stdin lines (each answer is one JSON line on stdout; the first is {"ready": true}):
  `sell SLOT`, `restock [SLOT [COUNT]]` (no slot: every slot to capacity), `status`, `wait_reconciled`,
  `needs_count` (vends waiting for a technician's count), `count ORDER_ID N` (settle one by a count),
  `sync_status` (the sync client's status), `backlog` ({"backlog", "parked"} from the ledger
  outbox), `pull_config` (run the config puller now, as its next tick would), and for the
  reliability harness `wait_synced [S]`, `planogram`, `quiet`, `arm POINT[:N]`, `advance SECONDS`
  (with VENDEDGE_MANUAL_CLOCK=1), `retention`, `stats`; with `[takeandgo]` on, `open_session ID`
  (authorize a session for customer "cust", no limit), `session ID` (its sessions-table row, or
  null) and `alarms` (the active alarm keys); `quit` ends it.
A crash point (VENDEDGE_CRASH_AT) or SIGKILL ends it like a power cut. The secrets file named by
`machine.secrets_file` is loaded as `vendedge run` does.

Tests drive it with `DaemonProcess` (asyncio) and write a syncing config with `write_sync_config`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import signal
import sys
import time
from typing import IO, Any

from edge import crashpoints
from edge.clock import ManualClock
from edge.config import load_config, load_secrets
from edge.core.errors import EdgeError, SaleRefused
from edge.daemon import Daemon
from edge.ledger import repo
from edge.ledger.outbox import LedgerOutbox
from edge.logs import setup_logging
from edge.services.machine import Machine

ROOT = pathlib.Path(__file__).resolve().parents[2]


async def _wait_reconciled(daemon: Daemon, machine: Machine) -> dict[str, Any]:
    await daemon.board.wait_connected(5)  # type: ignore[union-attr]
    for _ in range(100):
        if not machine.vend.unreconciled:
            break
        await asyncio.sleep(0.1)
    return {"unreconciled": machine.vend.unreconciled}


async def _sync_command(daemon: Daemon, cmd: str) -> dict[str, Any]:
    if cmd == "backlog":
        assert daemon.db is not None
        outbox = LedgerOutbox(daemon.db)
        return {"backlog": await outbox.backlog(), "parked": await outbox.parked()}
    if daemon.sync is None:
        return {"error": "sync_disabled"}
    if cmd == "pull_config":
        async with asyncio.timeout(30):
            return {"applied": await daemon.sync.pull_config_once()}
    return daemon.sync.status


async def _answer(daemon: Daemon, machine: Machine, cmd: str, arg: str) -> Any:
    if cmd == "sell":
        return await machine.sell(arg, "card:test")
    if cmd == "restock":  # `restock` fills every slot, `restock A1` one slot, `restock A1 3` sets a count
        slot, _, count = arg.partition(" ")
        return await machine.restock(slot or None, int(count) if count else None, "test")
    if cmd == "wait_reconciled":
        return await _wait_reconciled(daemon, machine)
    if cmd == "needs_count":  # vends waiting for a technician's count
        return await machine.vends_needing_count()
    if cmd == "count":  # `count ORDER_ID N`: the technician counted N items in that vend's slot
        order_id, _, n = arg.partition(" ")
        return await machine.settle_count(order_id, int(n), "test-technician")
    if cmd == "status":
        return await machine.status()
    if cmd in ("sync_status", "backlog", "pull_config"):
        return await _sync_command(daemon, cmd)
    return await _harness_command(daemon, cmd, arg)


async def _until(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            while not await predicate():
                await asyncio.sleep(step_s)
    except TimeoutError:
        return False
    return True


async def _harness_command(daemon: Daemon, cmd: str, arg: str) -> Any:
    machine = daemon.machine
    assert machine is not None and daemon.board is not None and daemon.db is not None
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
    if cmd in ("open_session", "session", "alarms"):
        return await _takeandgo_command(daemon, cmd, arg)
    raise ValueError(f"unknown command {cmd!r}")


async def _takeandgo_command(daemon: Daemon, cmd: str, arg: str) -> Any:
    assert daemon.machine is not None and daemon.db is not None
    if cmd == "alarms":
        return {"alarms": sorted(a["alarm_key"] for a in await repo.active_alarms(daemon.db))}
    if cmd == "open_session":
        return await daemon.machine.services.takeandgo.open_session(arg, "cust", None)
    row = await daemon.db.fetchone("SELECT * FROM sessions WHERE session_id=?", (arg,))
    return dict(row) if row is not None else None


def _stats() -> dict[str, Any]:
    """What a soak watches: resident memory, open file descriptors, live asyncio tasks."""
    rss_kb = 0
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return {"rss_kb": rss_kb, "fds": len(os.listdir("/proc/self/fd")), "tasks": len(asyncio.all_tasks())}




async def main(config_path: str) -> None:
    cfg = load_config(config_path)
    setup_logging(cfg.machine.id, level="warning", fmt="json", stream=sys.stderr)
    secrets = load_secrets(cfg.machine.secrets_file) if cfg.machine.secrets_file else None
    clock = ManualClock(start=time.time()) if os.environ.get("VENDEDGE_MANUAL_CLOCK") else None
    daemon = Daemon(cfg, secrets, clock=clock)
    machine = await daemon.start()
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
            out = await _answer(daemon, machine, cmd, arg.strip())
        except SaleRefused as exc:
            out = {"refused": exc.reason}
        except (EdgeError, ValueError) as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out, default=str), flush=True)
    await daemon.stop()


class DaemonProcess:
    """The daemon subprocess seen from an async test: start, ask, SIGKILL, stop. Its stderr (logs)
    goes to `log_path`, appended across restarts."""

    def __init__(self, config: pathlib.Path, log_path: pathlib.Path,
                 env: dict[str, str] | None = None) -> None:
        self.config, self.log_path = config, log_path
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Spawn and wait for the `ready` line."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - tiny, closed in kill/stop
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.run_daemon", str(self.config), cwd=ROOT,
            env=self.env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=self._log)
        first = await self._line(timeout_s)
        if first != {"ready": True}:
            raise RuntimeError(f"daemon did not start: {first!r}, see {self.log_path}")

    async def _line(self, timeout_s: float) -> Any:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"daemon exited (rc={self.proc.returncode}), see {self.log_path}")
        return json.loads(raw)

    async def ask(self, line: str, timeout_s: float = 30.0) -> Any:
        """Send one control line, return its JSON answer."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(timeout_s)

    async def kill(self) -> None:
        """SIGKILL: a power cut, no shutdown path runs."""
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                await self.proc.wait()
        self._close_log()

    async def stop(self, timeout_s: float = 20.0) -> int | None:
        """Close stdin (the clean SIGTERM-like path); SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                async with asyncio.timeout(timeout_s):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def write_sync_config(state_dir: pathlib.Path, *, board_port: str, url: str, secret: bytes,
                      capacity: int | None = None, batch_max_records: int = 100,
                      poll_wait_s: float = 1.0) -> pathlib.Path:
    """A demo config with `[sync]` on, the secret (hex) in a 0600 file, and optionally every slot's
    capacity set to `capacity` (so a long test never runs out of stock)."""
    from hw_sim.world import load_demo_planogram  # noqa: PLC0415
    from tests.support.rigs.vend import write_config  # noqa: PLC0415 - keeps the daemon entry light

    state_dir.mkdir(parents=True, exist_ok=True)
    doc = load_demo_planogram()
    if capacity is not None:
        for slot in doc["slots"]:
            slot["capacity"] = capacity
    (state_dir / "planogram.json").write_text(json.dumps(doc))
    secrets = state_dir / "secrets.toml"
    secrets.write_text(f'machine_secret = "{secret.hex()}"\n')
    secrets.chmod(0o600)
    return write_config(state_dir, board_port=board_port, secrets_file=str(secrets), extra=f"""
[sync]
enabled = true
url = "{url}"
batch_max_records = {batch_max_records}
poll_wait_s = {poll_wait_s}
""")


def spiral_stock(state_dir: pathlib.Path) -> dict[str, int]:
    """{slot_id: capacity} of the spiral slots in the planogram `write_sync_config` wrote."""
    doc = json.loads((state_dir / "planogram.json").read_text())
    return {s["slot_id"]: s["capacity"] for s in doc["slots"] if s.get("shelf") is None}


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

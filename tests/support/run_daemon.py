"""Run the real daemon in a subprocess with a line-based control channel on stdin (tests only).

    python -m tests.support.run_daemon CONFIG
stdin lines (each answer is one JSON line on stdout):
  `sell SLOT`, `restock [SLOT]` (no slot: every slot to capacity), `status`, `wait_reconciled`,
  `sync_status` (the sync client's status), `backlog` ({"backlog", "parked"} from the ledger
  outbox), `pull_config` (run the config puller now, as its next tick would), `quit`.
A crash point (VENDEDGE_CRASH_AT) or SIGKILL ends it like a power cut. The secrets file named by
`machine.secrets_file` is loaded as `vendedge run` does.

Tests drive it with `DaemonProcess` (asyncio) and write a syncing config with `write_sync_config`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import sys
from typing import IO, Any

from edge.config import load_config, load_secrets
from edge.core.errors import SaleRefused
from edge.daemon import Daemon
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
    if cmd == "restock":
        return await machine.restock(arg or None, None, "test")
    if cmd == "wait_reconciled":
        return await _wait_reconciled(daemon, machine)
    if cmd == "status":
        return await machine.status()
    if cmd in ("sync_status", "backlog", "pull_config"):
        return await _sync_command(daemon, cmd)
    return None


async def main(config_path: str) -> None:
    cfg = load_config(config_path)
    setup_logging(cfg.machine.id, level="warning", fmt="json")
    secrets = load_secrets(cfg.machine.secrets_file) if cfg.machine.secrets_file else None
    daemon = Daemon(cfg, secrets)
    machine = await daemon.start()
    await daemon.board.wait_connected(10)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := (await reader.readline()).decode().strip():
        cmd, _, arg = line.partition(" ")
        try:
            out = await _answer(daemon, machine, cmd, arg.strip())
        except SaleRefused as exc:
            out = {"refused": exc.reason}
        if out is None:
            break
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
    from edge.demo.setup import write_config  # noqa: PLC0415 - keeps the daemon entry light
    from hw_sim.world import load_demo_planogram  # noqa: PLC0415

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

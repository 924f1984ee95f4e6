"""Run the real daemon in a subprocess with a line-based control channel on stdin (tests only).

    python -m tests.support.run_daemon CONFIG
stdin lines: `sell SLOT`, `restock SLOT`, `status`, `wait_reconciled`, `quit`; each answer is one JSON line on stdout.
A crash point (VENDEDGE_CRASH_AT) or SIGKILL ends it like a power cut.
"""

from __future__ import annotations

import asyncio
import json
import sys

from edge.config import load_config
from edge.core.errors import SaleRefused
from edge.daemon import Daemon
from edge.logs import setup_logging


async def main(config_path: str) -> None:
    cfg = load_config(config_path)
    setup_logging(cfg.machine.id, level="warning", fmt="json")
    daemon = Daemon(cfg)
    machine = await daemon.start()
    await daemon.board.wait_connected(10)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := (await reader.readline()).decode().strip():
        cmd, _, arg = line.partition(" ")
        try:
            if cmd == "sell":
                out = await machine.sell(arg, "card:test")
            elif cmd == "restock":
                out = await machine.restock(arg, None, "test")
            elif cmd == "wait_reconciled":
                await daemon.board.wait_connected(5)  # type: ignore[union-attr]
                for _ in range(100):
                    if not machine.vend.unreconciled:
                        break
                    await asyncio.sleep(0.1)
                out = {"unreconciled": machine.vend.unreconciled}
            elif cmd == "status":
                out = await machine.status()
            else:
                break
        except SaleRefused as exc:
            out = {"refused": exc.reason}
        print(json.dumps(out, default=str), flush=True)
    await daemon.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

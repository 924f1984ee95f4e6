"""Running the reference cloud: `serve()` for tests/demo, `main(argv)` for the CLI."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from sync.refcloud.app import create_app

log = structlog.get_logger(__name__)


async def serve(host: str, port: int, db_path: str, admin_token: str, *,
                shutdown_timeout: float = 2.0,
                ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Start the reference cloud on host:port (port 0 picks one); `await runner.cleanup()` stops it.
    With `ssl_context` it serves HTTPS (and can require client certificates).

    The bound port is `runner.addresses[0][1]`.
    """
    runner = web.AppRunner(create_app(db_path, admin_token=admin_token), access_log=None,
                           shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    log.info("refcloud_listening", host=host, port=runner.addresses[0][1], db=db_path)
    return runner


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vendedge refcloud", description="vendedge reference cloud")
    p.add_argument("--db", required=True, help="SQLite file (created if missing)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--admin-token", default=os.environ.get("VENDEDGE_ADMIN_TOKEN"),
                   help="admin Bearer token (or env VENDEDGE_ADMIN_TOKEN)")
    args = p.parse_args(argv)
    if not args.admin_token or len(args.admin_token) < 8:
        p.error("--admin-token (>= 8 characters) is required")
    return args


async def _run(args: argparse.Namespace) -> None:
    runner = await serve(args.host, args.port, args.db, args.admin_token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("refcloud_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: `vendedge refcloud --db X --port P --admin-token T`. Returns the exit code."""
    asyncio.run(_run(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
from sync.refcloud.mqtt_ingest import MqttCloudSettings
from sync.refcloud.mqtt_ingest import install as install_mqtt

log = structlog.get_logger(__name__)


async def serve(host: str, port: int, db_path: str, admin_token: str, *,
                shutdown_timeout: float = 2.0,
                ssl_context: ssl.SSLContext | None = None,
                mqtt: MqttCloudSettings | None = None) -> web.AppRunner:
    """Start the reference cloud on host:port (port 0 picks one); `await runner.cleanup()` stops it.
    With `ssl_context` it serves HTTPS (and can require client certificates); with `mqtt` it also
    ingests from and publishes to that broker (sync/refcloud/mqtt_ingest.py).

    The bound port is `runner.addresses[0][1]`.
    """
    app = create_app(db_path, admin_token=admin_token)
    if mqtt is not None:
        install_mqtt(app, mqtt)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    log.info("refcloud_listening", host=host, port=runner.addresses[0][1], db=db_path)
    return runner


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vendedge refcloud", description="vendedge reference cloud",
                                epilog="`vendedge refcloud mqtt-acl --help`: write the Mosquitto password "
                                       "and ACL files for the registered machines")
    p.add_argument("--db", required=True, help="SQLite file (created if missing)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--admin-token", default=os.environ.get("VENDEDGE_ADMIN_TOKEN"),
                   help="admin Bearer token (or env VENDEDGE_ADMIN_TOKEN)")
    p.add_argument("--mqtt-url", default="", help="also serve machines over this MQTT 5 broker "
                   "(mqtts://host:8883; mqtt:// on loopback); see `vendedge refcloud mqtt-acl`")
    p.add_argument("--mqtt-password", default=os.environ.get("VENDEDGE_MQTT_PASSWORD"),
                   help="the cloud's broker password (or env VENDEDGE_MQTT_PASSWORD)")
    p.add_argument("--mqtt-prefix", default="vendedge")
    p.add_argument("--mqtt-workers", type=int, default=2, help="ingest clients on the shared subscription")
    args = p.parse_args(argv)
    if not args.admin_token or len(args.admin_token) < 8:
        p.error("--admin-token (>= 8 characters) is required")
    if args.mqtt_url and not args.mqtt_password:
        p.error("--mqtt-password (or VENDEDGE_MQTT_PASSWORD) is required with --mqtt-url")
    return args


async def _run(args: argparse.Namespace) -> None:
    mqtt = (MqttCloudSettings(args.mqtt_url, args.mqtt_password, prefix=args.mqtt_prefix,
                              workers=max(1, args.mqtt_workers)) if args.mqtt_url else None)
    # The handlers go in before the port opens: a supervisor may send SIGTERM as soon as it
    # can connect, and the default action would kill the process without cleanup (exit -15).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = await serve(args.host, args.port, args.db, args.admin_token, mqtt=mqtt)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("refcloud_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: `vendedge refcloud --db X --port P --admin-token T [--mqtt-url U]`, or
    `vendedge refcloud mqtt-acl …`. Returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["mqtt-acl"]:
        from sync.refcloud.mqtt_acl import main as acl_main  # noqa: PLC0415

        return acl_main(args[1:])
    asyncio.run(_run(_parse(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

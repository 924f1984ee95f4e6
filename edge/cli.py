"""`vendedge` command line: run the daemon, check a config, demo, reference cloud, users."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from edge.core.errors import ConfigError, EdgeError

DEFAULT_CONFIG = "/etc/vendedge/vendedge.toml"


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=os.environ.get("VENDEDGE_CONFIG", DEFAULT_CONFIG), metavar="FILE",
                   help="the machine's TOML config (default: $VENDEDGE_CONFIG, else %(default)s)")


def _parser() -> argparse.ArgumentParser:
    from edge import __version__

    p = argparse.ArgumentParser(prog="vendedge", description="vending machine edge controller")
    p.add_argument("--version", action="version", version=f"vendedge {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon (what systemd starts)",
                         description="Run the daemon until SIGTERM/SIGINT. Exits 2 on a config error, "
                                     "1 when start-up fails.")
    _config_arg(run)
    chk = sub.add_parser("check-config", help="validate a config file (and its secrets file) and exit",
                         description="Validate exactly as `run` does. Exit 0 when ok, 2 with the error.")
    _config_arg(chk)
    demo = sub.add_parser("demo", help="simulator + daemon (+ cloud + web page), all local",
                          description="The simulated hardware with this daemon as a subprocess (`python -m "
                                      "hw_sim.demo`). Interactive until Ctrl-C, or a headless scenario that "
                                      "prints a summary.")
    demo.add_argument("--scenario", choices=["interactive", "classic-vend", "fridge-day"], default="interactive",
                      help="what to run (default: %(default)s)")
    demo.add_argument("--customers", type=int, default=40, help="customers in classic-vend (default: %(default)s)")
    demo.add_argument("--payment", choices=["none", "mdb"], default="none",
                      help="classic-vend: 'mdb' pays by card through a simulated MDB reader (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    demo.add_argument("--transport", choices=["https", "mqtt"], default="https",
                      help="the interactive demo's cloud link: https (default) or mqtt through a local "
                           "Mosquitto (docs/protocols/mqtt.md)")
    demo.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    demo.add_argument("--dir", "--state", "--keep-state", dest="dir", default="", metavar="DIR",
                      help="state directory, kept afterwards (default: a temp dir removed on exit)")
    demo.add_argument("--web-port", type=int, default=8080,
                      help="diagnostics page port on 127.0.0.1 (default: %(default)s; 0 = any free port)")
    sub.add_parser("refcloud", help="run the reference cloud server (see `vendedge refcloud --help`)",
                   add_help=False)
    user = sub.add_parser("user", help="diagnostics-page accounts: add, list, remove",
                          description="Accounts live in the machine's ledger (machine.data_dir of --config). "
                                      "There is no default password; it is asked twice on a terminal.")
    user.add_argument("action", choices=["add", "list", "remove"], help="what to do")
    user.add_argument("name", nargs="?", help="account name (add, remove)")
    user.add_argument("--role", choices=["technician", "viewer", "kiosk"], default="technician",
                      help="technician may act, viewer only reads, kiosk only sells (the touchscreen app; "
                           "default: %(default)s)")
    _config_arg(user)
    dex = sub.add_parser("dex", help="print a DEX/EVA-DTS audit read of the ledger (docs/protocols/dex.md)",
                         description="Print one DEX (EVA-DTS) read to stdout; it is recorded in the ledger and "
                                     "queued for the cloud. --interim also resets the interim counters.")
    mode = dex.add_mutually_exclusive_group()
    mode.add_argument("--interim", action="store_true", help="interim read: reset the interim counters")
    mode.add_argument("--all", action="store_true", help="read without reset (the default)")
    _config_arg(dex)
    user.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    from edge.products import add_parser as add_product_parser

    add_product_parser(sub, _config_arg)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["refcloud"]:
        from sync.refcloud import main as refcloud_main

        return int(refcloud_main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "run":
            return _run(args.config)
        if args.cmd == "check-config":
            from edge.config import load_all

            cfg, _ = load_all(args.config)
            print(f"ok: {cfg.source} (machine {cfg.machine.id})")
            return 0
        if args.cmd == "demo":  # the demo is hw_sim's (edge never imports it): this process becomes it
            os.execv(sys.executable, [sys.executable, "-m", "hw_sim.demo", *argv[argv.index("demo") + 1:]])
        if args.cmd == "dex":
            sys.stdout.write(asyncio.run(_dex(args.config, interim=args.interim)))
            return 0
        if args.cmd == "user":
            from edge.cli_users import user_command

            return user_command(args)
        if args.cmd == "product":
            from edge.products import product_command

            return product_command(args)
    except ConfigError as exc:
        hint = ""
        if exc.key == "<file>" and not os.path.exists(str(exc.value)):
            hint = " (pass --config FILE or set VENDEDGE_CONFIG)"
        print(f"vendedge: {exc}{hint}", file=sys.stderr)
        return 2
    return 2


async def _dex(config_path: str, *, interim: bool) -> str:
    """Open the machine's ledger (the daemon may be running: WAL, one writer between processes), read once."""
    import pathlib

    from edge.config import load_config
    from edge.ledger.db import LedgerDB
    from edge.services.dex import DexService

    cfg = load_config(config_path)
    path = pathlib.Path(cfg.machine.data_dir) / "ledger.sqlite3"
    if not path.is_file():
        raise ConfigError("machine.data_dir", cfg.machine.data_dir, "a directory holding the machine's ledger")
    db = await LedgerDB.open(str(path))
    try:
        service = DexService.for_machine(db, cfg.machine.id, cfg.machine.currency)
        return (await service.read(interim=interim, actor="cli")).text
    finally:
        await db.close()


def _run(config_path: str) -> int:
    from edge.config import load_all
    from edge.daemon import Daemon
    from edge.logs import setup_logging

    cfg, secrets = load_all(config_path)
    setup_logging(cfg.machine.id, level=cfg.logging.level, fmt=cfg.logging.format)
    return asyncio.run(_serve(Daemon(cfg, secrets)))


async def _serve(daemon: Any) -> int:
    """Start, wait for SIGTERM/SIGINT, stop. A start-up failure stops what did start and exits 1 at once
    (a half-started daemon would keep the process alive on its ledger threads)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.start()
    except (EdgeError, OSError) as exc:
        print(f"vendedge: start-up failed: {exc}", file=sys.stderr)
        await daemon.stop()
        return 2 if isinstance(exc, ConfigError) else 1
    await stop.wait()
    await daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`vendedge` command line: run the daemon, check a config, demo, reference cloud, users."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from edge.core.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vendedge", description="vending machine edge controller")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the daemon (what systemd starts)")
    run.add_argument("--config", default="/etc/vendedge/vendedge.toml")
    chk = sub.add_parser("check-config", help="validate a config file and exit")
    chk.add_argument("--config", default="/etc/vendedge/vendedge.toml")
    demo = sub.add_parser("demo", help="simulator + daemon (+ cloud + web page), all local")
    demo.add_argument("--scenario", choices=["interactive", "classic-vend", "fridge-day"], default="interactive")
    demo.add_argument("--customers", type=int, default=40)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    demo.add_argument("--dir", default="", help="state directory (default: a new temp dir)")
    demo.add_argument("--web-port", type=int, default=8080)
    sub.add_parser("refcloud", help="run the reference cloud server", add_help=False)
    user = sub.add_parser("user", help="technician accounts")
    user.add_argument("action", choices=["add", "list", "remove"])
    user.add_argument("name", nargs="?")
    user.add_argument("--role", choices=["technician", "viewer"], default="technician")
    user.add_argument("--config", default="/etc/vendedge/vendedge.toml")
    user.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
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
            from edge.config import load_config

            cfg = load_config(args.config)
            print(f"ok: {cfg.source} (machine {cfg.machine.id})")
            return 0
        if args.cmd == "demo":
            from edge.demo import run_demo

            return run_demo(args)
        if args.cmd == "user":
            from edge.web.users import user_command

            return user_command(args)
    except ConfigError as exc:
        print(f"vendedge: {exc}", file=sys.stderr)
        return 2
    return 2


def _run(config_path: str) -> int:
    from edge.config import load_config, load_secrets
    from edge.daemon import Daemon
    from edge.logs import setup_logging

    cfg = load_config(config_path)
    secrets = load_secrets(cfg.machine.secrets_file) if cfg.machine.secrets_file else None
    setup_logging(cfg.machine.id, level=cfg.logging.level, fmt=cfg.logging.format)
    asyncio.run(Daemon(cfg, secrets).run_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m hw_sim.demo ARGS` — what `vendedge demo ARGS` runs (edge/cli.py execs it)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, TextIO

import structlog

from hw_sim.rigs.cloud import MOSQUITTO_HINT, mosquitto_binary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vendedge demo", description="The simulated machine with the real daemon "
                                "(+ reference cloud + web page), all local. Interactive until Ctrl-C, or a "
                                "headless scenario that prints a summary.")
    p.add_argument("--scenario", choices=["interactive", "classic-vend", "fridge-day"], default="interactive",
                   help="what to run (default: %(default)s)")
    p.add_argument("--customers", type=int, default=40, help="customers in classic-vend (default: %(default)s)")
    p.add_argument("--payment", choices=["none", "mdb"], default="none",
                   help="classic-vend: 'mdb' pays by card through a simulated MDB reader (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    p.add_argument("--transport", choices=["https", "mqtt"], default="https",
                   help="the interactive demo's cloud link: https (default) or mqtt through a local "
                        "Mosquitto (docs/protocols/mqtt.md)")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    p.add_argument("--dir", "--state", "--keep-state", dest="dir", default="", metavar="DIR",
                   help="state directory, kept afterwards (default: a temp dir removed on exit)")
    p.add_argument("--web-port", type=int, default=8080,
                   help="diagnostics page port on 127.0.0.1 (default: %(default)s; 0 = any free port)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_demo(parser().parse_args(argv))


def run_demo(args: argparse.Namespace) -> int:
    """Run a scenario. The state directory is removed afterwards unless the user named one (--state DIR)."""
    problem = missing_prerequisite(args.scenario, args.web_port, args.transport)
    if problem:
        print(f"vendedge demo: {problem}", file=sys.stderr)
        return 2
    keep = bool(args.dir)
    state_dir = os.path.abspath(args.dir) if keep else tempfile.mkdtemp(prefix="vendedge-demo-")
    try:
        os.makedirs(state_dir, exist_ok=True)
        return _scenario(args, state_dir)
    finally:
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)


def _scenario(args: argparse.Namespace, state_dir: str) -> int:
    if args.scenario == "interactive":
        from hw_sim.demo.interactive import interactive

        log_path = os.path.join(state_dir, "demo.log")
        with open(log_path, "a", encoding="utf-8") as log_file:  # logs to a file: the banner stays on screen
            setup_logging("info", log_file, as_json=True)
            return asyncio.run(interactive(state_dir, web_port=args.web_port, keep_state=bool(args.dir),
                                           log_path=log_path, transport=args.transport, seed=args.seed))
    setup_logging("warning" if args.json else "info", sys.stderr, as_json=args.json)
    if args.scenario == "fridge-day":
        from hw_sim.demo.fridge import fridge_day

        summary = asyncio.run(fridge_day(state_dir, seed=args.seed))
        return finish(summary, args.json, ok=summary.get("ok", True))
    if args.payment == "mdb":  # card payment through a simulated MDB reader
        from hw_sim.demo.classic_mdb import classic_vend_mdb

        summary = asyncio.run(classic_vend_mdb(state_dir, customers=args.customers, seed=args.seed))
    else:
        from hw_sim.demo.classic import classic_vend

        summary = asyncio.run(classic_vend(state_dir, customers=args.customers, seed=args.seed))
    return finish(summary, args.json, ok=summary["mismatches"] == 0)


def missing_prerequisite(scenario: str, web_port: int, transport: str = "https") -> str:
    """What stops the demo before anything starts (a missing tool, a busy port), said plainly; '' if none."""
    if scenario != "classic-vend" and shutil.which("socat") is None:
        return ("socat is not installed (the simulated RS-485 adapter is a socat pty pair). "
                "Install it with `make sysdeps` or `sudo apt-get install -y socat`.")
    if scenario == "interactive" and web_port:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", web_port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                return (f"port {web_port} on 127.0.0.1 is already in use (another demo still running?). "
                        f"Stop it, or pick a port: `vendedge demo --web-port 8081` (0 = any free port).")
    if scenario == "interactive" and transport == "mqtt" and mosquitto_binary() is None:
        return MOSQUITTO_HINT
    return ""


def setup_logging(level: str, stream: TextIO, *, as_json: bool) -> None:
    """The simulators' own log lines (structlog): JSON lines or a plain console, never colours."""
    renderer: Any = (structlog.processors.JSONRenderer() if as_json
                     else structlog.dev.ConsoleRenderer(colors=False))
    logging.basicConfig(level=logging.WARNING, stream=stream)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the plant's servers log every frame
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream), cache_logger_on_first_use=False)


def finish(summary: dict[str, Any], as_json: bool, *, ok: bool) -> int:
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for k, v in summary.items():
            print(f"{k:>28}: {v}")
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

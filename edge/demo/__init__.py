"""`vendedge demo`: the simulator, the daemon (and, as they land, cloud and web page) in one process.

Scenarios print one JSON summary as the last line with `--json`; they exit 0 only when the ledger
and the simulator agree.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from edge.logs import setup_logging

MACHINE_ID = "demo-0001"  # the id every demo config writes (edge.demo.setup.write_config)


def run_demo(args: argparse.Namespace) -> int:
    """Run a scenario. The state directory is removed afterwards unless the user named one (--state DIR)."""
    problem = missing_prerequisite(args.scenario, args.web_port)
    if not problem and getattr(args, "transport", "https") == "mqtt":
        from edge.demo.mqtt_broker import missing_mosquitto

        problem = missing_mosquitto()
    if problem:
        print(f"vendedge demo: {problem}", file=sys.stderr)
        return 2
    keep = bool(args.dir)
    state_dir = args.dir or tempfile.mkdtemp(prefix="vendedge-demo-")
    try:
        os.makedirs(state_dir, exist_ok=True)
        return _scenario(args, state_dir)
    finally:
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)


def _scenario(args: argparse.Namespace, state_dir: str) -> int:
    if args.scenario == "classic-vend":
        setup_logging(MACHINE_ID, level="warning" if args.json else "info", fmt="json" if args.json else "console")
        if getattr(args, "payment", "none") == "mdb":  # card payment through a simulated MDB reader
            from edge.demo.classic_mdb import classic_vend_mdb

            summary = asyncio.run(classic_vend_mdb(state_dir, customers=args.customers, seed=args.seed))
            return _finish(summary, args.json, ok=summary["mismatches"] == 0)
        from edge.demo.classic import classic_vend

        summary = asyncio.run(classic_vend(state_dir, customers=args.customers, seed=args.seed))
        return _finish(summary, args.json, ok=summary["mismatches"] == 0)
    if args.scenario == "fridge-day":
        setup_logging(MACHINE_ID, level="warning" if args.json else "info", fmt="json" if args.json else "console")
        from edge.demo.fridge import fridge_day

        summary = asyncio.run(fridge_day(state_dir, seed=args.seed))
        return _finish(summary, args.json, ok=summary.get("ok", True))
    from edge.demo.interactive import interactive

    log_path = os.path.join(state_dir, "demo.log")
    with open(log_path, "a", encoding="utf-8") as log_file:  # logs to a file: the banner stays on screen
        setup_logging(MACHINE_ID, level="info", fmt="json", stream=log_file)
        return asyncio.run(interactive(state_dir, web_port=args.web_port, keep_state=bool(args.dir),
                                       log_path=log_path, transport=getattr(args, "transport", "https")))


def missing_prerequisite(scenario: str, web_port: int) -> str:
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
    return ""


def _finish(summary: dict[str, Any], as_json: bool, *, ok: bool) -> int:
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for k, v in summary.items():
            print(f"{k:>28}: {v}")
    sys.stdout.flush()
    return 0 if ok else 1

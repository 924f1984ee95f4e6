"""`vendedge demo`: the simulator, the daemon (and, as they land, cloud and web page) in one process.

Scenarios print one JSON summary as the last line with `--json`; they exit 0 only when the ledger
and the simulator agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from typing import Any

from edge.logs import setup_logging


def run_demo(args: argparse.Namespace) -> int:
    state_dir = args.dir or tempfile.mkdtemp(prefix="vendedge-demo-")
    setup_logging("demo", level="warning" if args.json else "info", fmt="console" if not args.json else "json")
    if args.scenario == "classic-vend":
        from edge.demo.classic import classic_vend

        summary = asyncio.run(classic_vend(state_dir, customers=args.customers, seed=args.seed))
        return _finish(summary, args.json, ok=summary["mismatches"] == 0)
    if args.scenario == "fridge-day":
        from edge.demo.fridge import fridge_day

        summary = asyncio.run(fridge_day(state_dir, seed=args.seed))
        return _finish(summary, args.json, ok=summary.get("ok", True))
    from edge.demo.interactive import interactive

    return asyncio.run(interactive(state_dir, web_port=args.web_port))


def _finish(summary: dict[str, Any], as_json: bool, *, ok: bool) -> int:
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for k, v in summary.items():
            print(f"{k:>28}: {v}")
    sys.stdout.flush()
    return 0 if ok else 1

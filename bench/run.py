#!/usr/bin/env python3
"""Benchmark entry point: `python bench/run.py NAME [--quick] [...]` prints one JSON object last.

Figures are medians/percentiles or ratios measured in one run (the machines are noisy); targets
are reported beside them, never asserted in unit tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=["vend", "modbus", "sync", "fleet", "checkout", "web", "soak", "powercut", "vision", "ops",
                                      "fleet-mqtt"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--machines", type=int, default=1000, help="fleet-mqtt: simulated machines")
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--days", type=int, default=7, help="ops: simulated days per run")
    p.add_argument("--novel", action="store_true", help="vision: never-seen products (bench/novel)")
    p.add_argument("--model-dir", default="", help="vision: a model directory (default: the shipped model)")
    p.add_argument("--seeds", default="", help="vision: comma-separated seeds, rates averaged (e.g. 7,1,2,3,4,5)")
    p.add_argument("--bound", action="store_true",
                   help="vision --novel: also the doubt the card's rule leaves with gates chosen on the reads "
                        "themselves (a diagnostic of the embedding, pooled over --seeds)")
    p.add_argument("--vision-only-daemon", action="store_true",
                   help="checkout: also run the sessions through a daemon with fusion = false")
    p.add_argument("--catalogue", choices=["demo", "novel"], default="demo",
                   help="checkout: novel = never-seen products enrolled through the daemon (bench/checkout_enrolled.py)")
    p.add_argument("--enroll", choices=["photos", "capture"], default="photos",
                   help="checkout --catalogue novel: from 3 reference photos, or captured from the shelf camera")
    args = p.parse_args()
    from edge.logs import setup_logging

    setup_logging("bench", level="warning", fmt="json", stream=sys.stderr)  # stdout is for the JSON result
    if args.name == "vend":
        from bench.vend_bench import run
        result = asyncio.run(run(quick=args.quick))
    elif args.name == "modbus":
        from bench.modbus_bench import run
        result = _maybe_async(run(quick=args.quick))
    elif args.name == "sync":
        from bench.sync_bench import run
        result = _maybe_async(run(quick=args.quick))
    elif args.name == "fleet":
        from bench.sync_bench import run_fleet
        result = _maybe_async(run_fleet(machines=50 if args.quick else 200, quick=args.quick))
    elif args.name == "fleet-mqtt":
        from bench.fleet_mqtt_bench import run as run_fleet_mqtt
        result = run_fleet_mqtt(machines=args.machines, per_machine=20 if args.quick else 100)
    elif args.name == "checkout" and args.catalogue == "novel":
        from bench.checkout_bench import run_enrolled
        result = _maybe_async(run_enrolled(sessions=args.sessions, seed=args.seed, how=args.enroll))
    elif args.name == "checkout":
        from bench.checkout_bench import run
        result = _maybe_async(run(sessions=args.sessions, seed=args.seed,
                                  vision_only_daemon=args.vision_only_daemon))
    elif args.name == "web":
        from bench.web_bench import run
        result = _maybe_async(run(quick=args.quick))
    elif args.name == "soak":
        from bench.soak import run
        result = _maybe_async(run(quick=args.quick))
    elif args.name == "vision":
        from bench.vision_bench import run, run_seeds
        kw = {"tests": 20 if args.quick else 40, "bound": args.bound,
              **({"model_dir": args.model_dir} if args.model_dir else {})}
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        result = run_seeds(seeds, **kw) if seeds else run(seed=args.seed, **kw)
    elif args.name == "ops":
        from bench.ops_bench import run
        result = run(days=args.days, seed=args.seed)
    else:
        from bench.powercut import run
        result = _maybe_async(run(kills=args.kills))
    print(json.dumps({"bench": args.name, **result}, sort_keys=True))
    return 0


def _maybe_async(value):  # type: ignore[no-untyped-def]
    return asyncio.run(value) if asyncio.iscoroutine(value) else value


if __name__ == "__main__":
    sys.exit(main())

"""Bench `web`: page/API latency under 50 concurrent clients while the simulator vends, and what that
load adds to a customer's checkout (vend) time.

The daemon, the web app and the simulated board share one process and one loop, as on a machine.
The 50 clients run in a separate process (like real browsers would), on loopback, each logged in
with one of a few technician sessions, requesting pages and API documents back to back with a short
think time. Checkout latency is `machine.sell` wall time (journal → motor → ledger) measured without
and then with that load.

Run: `python bench/run.py web [--quick]` (prints one JSON object).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

PATHS = ["/", "/api/v1/status", "/stock", "/api/v1/stock", "/events", "/api/v1/events?kind=audit", "/sales",
         "/devices", "/api/v1/devices"]
SESSIONS = 5
PASSWORD = "bench password 123"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))], 2) if xs else float("nan")


async def _client_main(base: str, cookies: list[str], clients: int, duration_s: float, think_s: float) -> None:
    """The load process: `clients` workers until the deadline; prints one JSON summary."""
    import aiohttp

    lat: list[float] = []
    by_status: dict[str, int] = {}
    deadline = time.monotonic() + duration_s

    async def worker(i: int, s: aiohttp.ClientSession) -> None:
        headers = {"Cookie": f"vendedge_session={cookies[i % len(cookies)]}"}
        n = i
        while time.monotonic() < deadline:
            path = PATHS[n % len(PATHS)]
            n += 1
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(10):
                    async with s.get(base + path, headers=headers, allow_redirects=False) as r:
                        await r.read()
                        status = str(r.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            lat.append((time.perf_counter() - t0) * 1000)
            by_status[status] = by_status.get(status, 0) + 1
            await asyncio.sleep(think_s)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, s) for i in range(clients)))
        wall = time.perf_counter() - t0
    print(json.dumps({"requests": len(lat), "rps": round(len(lat) / wall, 1), "p50_ms": _pct(lat, 0.5),
                      "p95_ms": _pct(lat, 0.95), "p99_ms": _pct(lat, 0.99), "status": by_status}))


async def _checkouts(machine: Any, slots: list[str], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        order = await machine.sell(slots[i % len(slots)], f"bench:{i}")
        out.append((time.perf_counter() - t0) * 1000)
        assert order["status"] == "completed", order
    return out


async def _run(quick: bool, speed: float | None = None) -> dict[str, Any]:
    import pathlib

    from edge.config import Secrets, WebConfig, load_config
    from edge.daemon import Daemon
    from edge.services.accounts import Accounts
    from edge.web.app import bound_port, start_web
    from hw_sim.vend_board import SimVendBoard, run_in_thread
    from hw_sim.world import load_demo_planogram
    from tests.support.rigs.vend import write_config

    # Real motor timing by default: checkout latency is what a customer waits for, motor included.
    vends, clients = (8, 50) if quick else (30, 50)
    speed = speed or 1.0
    spiral = {s["slot_id"]: s["capacity"] for s in load_demo_planogram()["slots"] if s.get("shelf") is None}
    with tempfile.TemporaryDirectory() as d:
        # the board is its own device: it runs in its own thread, not on the daemon's loop
        sim = SimVendBoard(dict(spiral), speed=speed)
        handle = run_in_thread(sim, link_path=str(pathlib.Path(d) / "ttyVEND"))
        daemon = Daemon(load_config(write_config(pathlib.Path(d), board_port=handle.url)))
        machine = await daemon.start()
        await daemon.board.wait_connected(5.0)  # type: ignore[union-attr]
        await machine.restock(None, None, actor="bench")
        users = Accounts(machine.db)
        await users.add("bench", "technician", PASSWORD)
        cookies = []
        for _ in range(SESSIONS):
            token, _sess = await users.create_session(await users.authenticate("bench", PASSWORD))
            cookies.append(token)
        runner = await start_web(machine, WebConfig(host="127.0.0.1", port=0), Secrets())
        base = f"http://127.0.0.1:{bound_port(runner)}"
        slots = sorted(spiral)
        try:
            idle = await _checkouts(machine, slots, vends)
            duration = vends * (1.2 / speed + 0.1) * 1.5 + 2.0
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", base, json.dumps(cookies), str(clients), str(duration), "0.05",
                stdout=subprocess.PIPE)
            await asyncio.sleep(1.0)  # clients connected and warmed up
            loaded = await _checkouts(machine, slots[vends:] + slots, vends)
            async with asyncio.timeout(duration + 30):
                out, _ = await proc.communicate()
            load = json.loads(out.decode().strip().splitlines()[-1])
        finally:
            await runner.cleanup()
            await daemon.stop()
            handle.stop()
    idle_med, load_med = statistics.median(idle), statistics.median(loaded)
    motor_ms = 1200 / speed
    return {"clients": clients, "web": load, "vends_per_phase": vends, "motor_ms": motor_ms,
            "checkout_idle_p50_ms": round(idle_med, 1), "checkout_load_p50_ms": round(load_med, 1),
            "checkout_idle_p95_ms": _pct(idle, 0.95), "checkout_load_p95_ms": _pct(loaded, 0.95),
            "checkout_added_ratio": round(load_med / idle_med - 1, 3),
            "checkout_added_ms": round(load_med - idle_med, 1),
            "targets": {"checkout_added_ratio": 0.10, "web_p95_ms": 500}}


def run(quick: bool) -> dict[str, Any]:
    """Entry point for bench/run.py."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        base, cookies, clients, duration, think = sys.argv[2:7]
        asyncio.run(_client_main(base, json.loads(cookies), int(clients), float(duration), float(think)))
    else:
        speed_arg = [float(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--speed=")]
        print(json.dumps(asyncio.run(_run("--quick" in sys.argv, speed_arg[0] if speed_arg else None))))

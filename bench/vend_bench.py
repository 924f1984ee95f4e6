"""Bench `vend`: daemon overhead per vend, idle RSS of a real daemon process, start-to-READY time."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from hw_sim.vend_board import SimVendBoard, run_in_thread
from tests.support.rigs.vend import start_rig, write_config


async def overhead(n: int) -> dict[str, float]:
    """Wall time of machine.sell minus the simulator's motor time, over n vends."""
    with tempfile.TemporaryDirectory() as d:
        rig = await start_rig(d, speed=20.0)
        machine = rig.daemon.machine
        assert machine is not None
        slots = sorted(rig.sim.stock)
        samples = []
        try:
            for i in range(n):
                slot = slots[i % len(slots)]
                if rig.sim.stock[slot] == 0:
                    rig.sim.stock[slot] = (await machine.restock(slot, None, actor="bench"))[slot]
                t0 = time.perf_counter()
                await machine.sell(slot, "bench")
                wall = time.perf_counter() - t0
                motor_s = rig.sim.last_motor_ms / 1000 / rig.sim.speed  # what the spiral took
                samples.append((wall - motor_s) * 1000)
        finally:
            await rig.stop()
    samples.sort()
    return {"overhead_median_ms": round(statistics.median(samples), 2),
            "overhead_p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2)}


def ready_and_rss() -> dict[str, float]:
    """Start `vendedge run` as systemd would (NOTIFY_SOCKET), time READY=1, then read its idle RSS."""
    with tempfile.TemporaryDirectory() as d:
        sim = SimVendBoard({"A1": 8})
        handle = run_in_thread(sim, link_path=os.path.join(d, "ttyVEND"))
        sock_path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        sock.settimeout(30)
        cfg = write_config(__import__("pathlib").Path(d), board_port=handle.url)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)],
                                env={**os.environ, "NOTIFY_SOCKET": sock_path},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            ready_s = time.perf_counter() - t0
            time.sleep(1.0)  # idle
            rss_kb = _rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(20)
            handle.stop()
            sock.close()
        return {"ready_s": round(ready_s, 3), "idle_rss_mb": round(rss_kb / 1024, 1),
                "sigterm_exit_code": proc.returncode}


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run(quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = await overhead(60 if quick else 300)
    result.update(ready_and_rss())
    result["targets"] = {"overhead_p95_ms": 20, "idle_rss_mb": 80, "ready_s": 2}
    return result

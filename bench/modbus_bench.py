"""Modbus bus benchmark: how close the hub gets to the wire-time limit, and what a silent slave costs.

Four slaves (fridge controller, two weight-shelf modules, door I/O) on one simulated RTU line at
19200 baud; the simulator paces every reply by wire time. Prints one JSON line.

  efficiency          achieved poll cycles/s / wire-time limit (target >= 0.8)
  cycles_per_s        full cycles (every slave, every block) per second, polling flat out
  limit_cycles_per_s  1 / sum over all requests of (request+reply bytes x 10 / baud + 2 x T3.5)
  silent_slave_lag_ms extra mean poll period of the healthy slaves while one slave is silent and
                      backed off (poll interval 250 ms, timeout 300 ms, backoff cap 2 s);
                      silent_slave_p95_lag_ms the same for the 95th percentile (the jitter: a poll
                      that waits behind one timeout)
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from typing import Any

from drivers.modbus import ModbusDevice, ModbusHub, RegisterMap
from hw_sim.modbus import SimModbusPlant
from hw_sim.world import FridgeWorld, load_demo_planogram

BAUD = 19200
SLAVES = {"fridge_controller": (1, "fridge_controller"), "weight_shelf": (2, "weight_shelf"),
          "io_module": (3, "io_module"), "weight_shelf_b": (4, "weight_shelf")}


def limit_cycles_per_s(maps: list[RegisterMap], baudrate: int = BAUD) -> float:
    """Wire-time limit: every block of every map once, with the mandatory T3.5 before each frame."""
    char_s = 10.0 / baudrate
    total = 0.0
    for m in maps:
        for b in m.blocks:
            reply = 5 + (math.ceil(b.count / 8) if b.table in ("coil", "discrete") else 2 * b.count)
            total += (8 + reply) * char_s + 2 * 3.5 * char_s
    return 1.0 / total


class _Recorder:
    """Timestamps of successful polls per device."""

    def __init__(self) -> None:
        self.stamps: dict[str, list[float]] = {}
        self.recording = False

    def __call__(self, dev: ModbusDevice) -> None:
        if self.recording and dev.online and dev.last_error is None:
            self.stamps.setdefault(dev.name, []).append(time.monotonic())

    def reset(self) -> None:
        self.stamps = {}

    def mean_period(self, name: str) -> float:
        s = self.stamps.get(name, [])
        return (s[-1] - s[0]) / (len(s) - 1) if len(s) > 1 else math.inf

    def p95_period(self, names: list[str]) -> float:
        gaps = [b - a for n in names for a, b in zip(self.stamps.get(n, []), self.stamps.get(n, [])[1:], strict=False)]
        return statistics.quantiles(gaps, n=20)[-1] if len(gaps) >= 2 else math.inf


async def _setup(link_dir: str, poll_s: float, timeout_s: float, max_backoff_s: float
                 ) -> tuple[SimModbusPlant, ModbusHub, _Recorder]:
    plant = SimModbusPlant(FridgeWorld(load_demo_planogram()), speed=60.0, baudrate=BAUD, wire_timing=True,
                           extra_units={4: "weight_shelf"})
    link = await plant.serve_rtu(f"{link_dir}/ttyBENCH")
    hub = ModbusHub("bench", serial_port=link, baudrate=BAUD, timeout_s=timeout_s)
    rec = _Recorder()
    for name, (unit, map_name) in SLAVES.items():
        hub.add_device(name, unit, RegisterMap.builtin(map_name), poll_interval_s=poll_s,
                       max_backoff_s=max_backoff_s).subscribe(rec)
    await hub.start()
    async with asyncio.timeout(10):
        while not all(d.online for d in hub.devices.values()):
            await asyncio.sleep(0.02)
    return plant, hub, rec


async def _throughput(link_dir: str, seconds: float) -> float:
    plant, hub, rec = await _setup(link_dir, poll_s=0.0, timeout_s=0.3, max_backoff_s=30.0)
    try:
        await asyncio.sleep(0.5)  # warm-up
        rec.recording = True
        await asyncio.sleep(seconds)
        rec.recording = False
        return min(1.0 / rec.mean_period(n) for n in SLAVES)
    finally:
        await hub.stop()
        await plant.close()


async def _silent_lag(link_dir: str, seconds: float) -> dict[str, float]:
    plant, hub, rec = await _setup(link_dir, poll_s=0.25, timeout_s=0.3, max_backoff_s=2.0)
    healthy = [n for n in SLAVES if n != "weight_shelf"]
    try:
        rec.recording = True
        await asyncio.sleep(seconds)
        base = statistics.mean(rec.mean_period(n) for n in healthy)
        base95 = rec.p95_period(healthy)
        plant.silence(SLAVES["weight_shelf"][0])
        async with asyncio.timeout(30):
            while hub.devices["weight_shelf"].online:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # let the healthy slaves catch up with their schedule first
        rec.reset()
        await asyncio.sleep(seconds)
        silent = statistics.mean(rec.mean_period(n) for n in healthy)
        silent95 = rec.p95_period(healthy)
        return {"healthy_period_ms": round(base * 1000, 1), "silent_period_ms": round(silent * 1000, 1),
                "healthy_p95_ms": round(base95 * 1000, 1), "silent_p95_ms": round(silent95 * 1000, 1),
                "silent_slave_lag_ms": round((silent - base) * 1000, 1),
                "silent_slave_p95_lag_ms": round((silent95 - base95) * 1000, 1),
                "silent_slave_timeouts": hub.devices["weight_shelf"].counters["timeouts"]}
    finally:
        await hub.stop()
        await plant.close()


async def _run(quick: bool) -> dict[str, Any]:
    limit = limit_cycles_per_s([RegisterMap.builtin(m) for _, m in SLAVES.values()])
    with tempfile.TemporaryDirectory(prefix="modbus-bench-") as d:
        cps = await _throughput(d, 3.0 if quick else 10.0)
        lag = await _silent_lag(d, 4.0 if quick else 15.0)
    return {"bench": "modbus", "quick": quick, "baudrate": BAUD, "slaves": len(SLAVES),
            "cycles_per_s": round(cps, 2), "limit_cycles_per_s": round(limit, 2),
            "efficiency": round(cps / limit, 3), **lag}


def run(quick: bool) -> dict[str, Any]:
    """Run the benchmark (quick: ~12 s, full: ~45 s) and return the figures."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    print(json.dumps(run(quick="--quick" in sys.argv)))

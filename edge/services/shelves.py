"""Weight shelves: stable grams per shelf, deltas with timestamps, tare and calibration.

The take-and-go flow asks `await shelves.wait_stable(timeout_s)` after the door closes and compares
with the snapshot taken when it opened. A shelf whose module is offline (or that never settles)
reports None: the flow then sends the session to review instead of guessing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.modbus import ModbusDevice
from edge.clock import SystemClock
from edge.core.shelves import ShelfDelta, StableDetector, StableSpec

log = structlog.get_logger(__name__)

WRITE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ShelfReading:
    shelf: int
    grams: float | None  # latest stable grams; None when offline or not yet stable
    stable: bool
    at: float | None  # service-clock monotonic time the stable value was established


class WeightShelves:
    """Per-shelf stability and deltas from the weight-shelf module (points `shelfK_grams`)."""

    def __init__(self, device: ModbusDevice, *, clock: SystemClock | None = None, spec: StableSpec | None = None,
                 shelves: list[int] | None = None, wait_poll_s: float = 0.02) -> None:
        self.device = device
        self.clock = clock or SystemClock()
        found = sorted(int(n[5:-6]) for n in device.regmap.points if n.startswith("shelf") and n.endswith("_grams"))
        self.shelves = shelves if shelves is not None else found
        self.detectors = {k: StableDetector(k, spec) for k in self.shelves}
        self.deltas: list[ShelfDelta] = []  # recent deltas (bounded), newest last
        self._listeners: list[Callable[[ShelfDelta], None]] = []
        self._changed = asyncio.Event()
        self.wait_poll_s = wait_poll_s
        device.subscribe(self._on_poll)

    def on_delta(self, cb: Callable[[ShelfDelta], None]) -> None:
        """Call `cb(ShelfDelta)` whenever a shelf settles at a new weight."""
        self._listeners.append(cb)

    def _on_poll(self, dev: ModbusDevice) -> None:
        now = self.clock.monotonic()
        if not dev.online:
            for det in self.detectors.values():
                det.reset()
            self._changed.set()
            return
        for k, det in self.detectors.items():
            grams = dev.values.get(f"shelf{k}_grams")
            if grams is None:
                continue
            delta = det.add(float(grams), now)
            if delta is not None:
                self.deltas = (self.deltas + [delta])[-200:]
                log.info("shelf_delta", shelf=k, delta_g=round(delta.delta_g, 1), after_g=round(delta.after_g, 1))
                for cb in self._listeners:
                    try:
                        cb(delta)
                    except Exception:  # a listener's bug must not stop the bus
                        log.exception("shelf_listener_failed", shelf=k)
        self._changed.set()

    def snapshot(self) -> dict[int, ShelfReading]:
        """Current per-shelf readings; grams None when offline or unstable."""
        online = self.device.online
        out = {}
        for k, det in self.detectors.items():
            ok = online and det.is_stable
            out[k] = ShelfReading(k, det.stable_g if ok else None, ok, det.stable_at if ok else None)
        return out

    async def wait_stable(self, timeout_s: float, *, fresh: bool = True) -> dict[int, float | None]:
        """Wait until every shelf is stable (on samples taken after this call when `fresh`).

        Returns {shelf: grams}; a shelf that is offline or still unsettled at the deadline is None.
        """
        start = self.clock.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                while self.device.online and not all(
                        (d.stable_since(start) if fresh else d.is_stable) for d in self.detectors.values()):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log.info("shelves_not_stable", timeout_s=timeout_s)
        online = self.device.online
        return {k: (d.stable_g if online and (d.stable_since(start) if fresh else d.is_stable) else None)
                for k, d in self.detectors.items()}

    async def tare(self, shelf: int) -> None:
        """Zero one shelf (the module's tare coil); the detector restarts from the new zero."""
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await self.device.write(f"tare_shelf{shelf}", True)
        self.detectors[shelf] = StableDetector(shelf, self.detectors[shelf].spec)
        log.info("shelf_tared", shelf=shelf)

    async def calibrate(self, shelf: int, known_g: float) -> float:
        """With a known mass on a tared, settled shelf, correct its calibration factor; returns it."""
        reading = (await self.wait_stable(10.0)).get(shelf)
        if reading is None or reading <= 0 or known_g <= 0:
            raise ValueError(f"shelf {shelf}: need a settled positive reading to calibrate (got {reading})")
        old = float(self.device.values.get(f"calibration_factor{shelf}", 1.0))
        factor = old * known_g / reading
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await self.device.write(f"calibration_factor{shelf}", factor)  # range-checked by the map
        self.detectors[shelf] = StableDetector(shelf, self.detectors[shelf].spec)
        log.info("shelf_calibrated", shelf=shelf, factor=round(factor, 5), known_g=known_g, read_g=reading)
        return factor

    def status(self) -> dict[str, Any]:
        return {"online": self.device.online,
                "shelves": {k: r.__dict__ for k, r in self.snapshot().items()},
                "recent_deltas": [d.__dict__ for d in self.deltas[-10:]]}

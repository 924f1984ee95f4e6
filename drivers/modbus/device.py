"""One slave on a Modbus bus: its latest values, health and poll schedule.

The hub owns the bus and calls `_poll_succeeded` / `_poll_failed`; this class keeps the per-device
bookkeeping (backoff, online/offline, measured poll period) so the hub stays a scheduler.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from .regmap import RegisterMap, Value

if TYPE_CHECKING:
    from .hub import ModbusHub

log = structlog.get_logger(__name__)

Subscriber = Callable[["ModbusDevice"], None]


class ModbusDevice:
    """A slave (unit id + register map) polled by a `ModbusHub`. Create it with `hub.add_device`."""

    def __init__(
        self,
        hub: ModbusHub,
        name: str,
        unit_id: int,
        regmap: RegisterMap,
        *,
        poll_interval_s: float = 1.0,
        offline_after: int = 3,
        max_backoff_s: float = 30.0,
    ) -> None:
        if not 0 < unit_id < 248:
            raise ValueError(f"unit_id {unit_id} outside 1..247")
        if poll_interval_s < 0 or offline_after < 1 or max_backoff_s <= 0:
            raise ValueError("poll_interval_s >= 0, offline_after >= 1 and max_backoff_s > 0 required")
        self._hub = hub
        self.name = name
        self.unit_id = unit_id
        self.regmap = regmap
        self.poll_interval_s = poll_interval_s
        self.offline_after = offline_after
        self.max_backoff_s = max_backoff_s
        self.online = False
        self.last_seen: float | None = None
        self.last_error: str | None = None
        self.values: dict[str, Value] = {}
        self.out_of_range: set[str] = set()  # points whose last value is outside their map range
        self.counters: dict[str, int] = {"polls": 0, "ok": 0, "timeouts": 0, "errors": 0}
        self.failures = 0  # consecutive failed polls
        self.next_due = 0.0  # time.monotonic() when the next poll is due
        self._subscribers: list[Subscriber] = []
        self._intervals: deque[float] = deque(maxlen=16)
        self._last_ok_start: float | None = None
        self._log = log.bind(bus=hub.name, device=name, unit=unit_id)

    @property
    def poll_period_s_measured(self) -> float | None:
        """Median of recent intervals between successful polls (None until two succeeded)."""
        return statistics.median(self._intervals) if self._intervals else None

    def subscribe(self, cb: Subscriber) -> None:
        """Call `cb(device)` after each poll and when the device goes online/offline."""
        self._subscribers.append(cb)

    async def read_now(self) -> dict[str, Value]:
        """One out-of-band read of every point (through the hub lock); raises a DeviceError on failure.
        It counts as a poll, so `ok` never exceeds `polls` (the counters /metrics exports)."""
        self.counters["polls"] += 1
        values = await self._hub.read_device(self)
        self._poll_succeeded(values, time.monotonic(), scheduled=False)
        return dict(values)

    async def write(self, point: str, value: Value) -> None:
        """Write one writable point and verify it by reading it back (DeviceFault on mismatch)."""
        p = self.regmap.point(point)
        if not p.writable:
            raise ValueError(f"{self.name}.{point} is not writable")
        if not p.in_range(value):
            raise ValueError(f"{self.name}.{point}={value} outside allowed range {p.range}")
        readback = await self._hub.write_point(self, p, value)
        self.values[point] = readback

    # -- bookkeeping called by the hub ---------------------------------------------------------

    def _poll_succeeded(self, values: dict[str, Value], started: float, *, scheduled: bool = True) -> None:
        self.values.update(values)
        self.out_of_range = {n for n, v in values.items() if not self.regmap.points[n].in_range(v)}
        self.last_seen = time.monotonic()
        self.last_error = None
        self.failures = 0
        self.counters["ok"] += 1
        if scheduled:
            if self._last_ok_start is not None:
                self._intervals.append(started - self._last_ok_start)
            self._last_ok_start = started
            self.next_due = max(self.next_due + self.poll_interval_s, started)
        if not self.online:
            self.online = True
            self._log.info(
                "modbus_device_online", after_failures=self.counters["timeouts"] + self.counters["errors"]
            )
        self._notify()

    def _poll_failed(self, exc: Exception, now: float, *, timeout: bool) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.counters["timeouts" if timeout else "errors"] += 1
        self._last_ok_start = None  # a gap in polling is not a poll period
        base = max(self.poll_interval_s, self._hub.timeout_s)
        self.next_due = now + min(self.max_backoff_s, base * 2 ** min(self.failures, 30))
        if self.online and self.failures >= self.offline_after:
            self.online = False
            self._log.warning("modbus_device_offline", failures=self.failures, error=self.last_error)
        else:
            self._log.debug("modbus_poll_failed", failures=self.failures, error=self.last_error)
        self._notify()

    def _link_lost(self, reason: str = "DeviceDisconnected: bus adapter gone") -> None:
        self._last_ok_start = None
        self.failures = max(self.failures, self.offline_after)
        self.next_due = 0.0
        if self.online:
            self.online = False
            self.last_error = reason
            self._log.warning("modbus_device_offline", error=self.last_error)
            self._notify()

    def _notify(self) -> None:
        for cb in list(self._subscribers):
            try:
                cb(self)
            except Exception:  # a broken subscriber must not stop the bus
                self._log.exception("modbus_subscriber_failed", subscriber=repr(cb))

    def __repr__(self) -> str:
        return f"ModbusDevice({self.name!r}, unit={self.unit_id}, online={self.online})"

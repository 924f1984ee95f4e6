"""Pure alarm rules: `rule.evaluate(state, reading, now) -> (state, [Raise | Clear])`.

No I/O and no clock: `now` is a monotonic number of seconds passed in by the caller. Each rule
raises its alarm once and clears it once; the service turns the effects into
`repo.raise_alarm` / `repo.clear_alarm` (which queue them for the cloud). A reading of `None`
means "no data" (device offline): threshold rules then hold their state, so a comms loss never
clears a temperature alarm and never raises one either (the offline alarm covers it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class Raise:
    """Raise alarm `key` (kind, message, severity and data go to the ledger and the cloud)."""

    key: str
    kind: str
    message: str
    severity: str = "warning"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Clear:
    """Clear alarm `key`."""

    key: str
    message: str = ""


Effect = Raise | Clear


@dataclass(frozen=True)
class RuleState:
    """What a rule remembers between readings. `active` mirrors the ledger's alarm row."""

    active: bool = False
    pending_since: float | None = None  # when the condition first held (delay running)
    last_value: float | None = None
    last_change: float | None = None  # for the stuck-sensor check


class Rule(Protocol):
    key: str

    def evaluate(self, state: RuleState, reading: Any, now: float) -> tuple[RuleState, list[Effect]]: ...


def _debounced(state: RuleState, bad: bool, good: bool, now: float, delay_s: float,
               make_raise: Any, clear: Clear) -> tuple[RuleState, list[Effect]]:
    """Shared delay/hysteresis logic: raise after `bad` held `delay_s`; clear when `good`."""
    if state.active:
        if good:
            return replace(state, active=False, pending_since=None), [clear]
        return state, []
    if not bad:
        return replace(state, pending_since=None), []
    since = state.pending_since if state.pending_since is not None else now
    if now - since >= delay_s:
        return replace(state, active=True, pending_since=since), [make_raise(now - since)]
    return replace(state, pending_since=since), []


@dataclass(frozen=True)
class ThresholdRule:
    """High (value above `limit`) or low (below) alarm with a delay and hysteresis.

    Raised once the condition has held continuously for `delay_s`; cleared once the value is back
    past `limit ∓ hysteresis` (so a value hovering at the limit does not flap).
    """

    key: str
    kind: str
    limit: float
    direction: str = "high"  # "high" | "low"
    delay_s: float = 0.0
    hysteresis: float = 0.0
    unit: str = "°C"
    severity: str = "warning"

    def __post_init__(self) -> None:
        if self.direction not in ("high", "low"):
            raise ValueError(f"direction must be 'high' or 'low', got {self.direction!r}")
        if self.delay_s < 0 or self.hysteresis < 0:
            raise ValueError("delay_s and hysteresis must be >= 0")

    def evaluate(self, state: RuleState, reading: float | None, now: float) -> tuple[RuleState, list[Effect]]:
        if reading is None or math.isnan(reading):
            return state, []
        if self.direction == "high":
            bad, good = reading > self.limit, reading <= self.limit - self.hysteresis
            word = "above"
        else:
            bad, good = reading < self.limit, reading >= self.limit + self.hysteresis
            word = "below"

        def make(held: float) -> Raise:
            return Raise(self.key, self.kind, f"{reading:.1f} {self.unit} {word} {self.limit:g} {self.unit} "
                         f"for {held:.0f} s", self.severity,
                         {"value": round(reading, 2), "limit": self.limit, "held_s": round(held, 1)})

        return _debounced(state, bad, good, now, self.delay_s, make,
                          Clear(self.key, f"{reading:.1f} {self.unit} back within limit"))


@dataclass(frozen=True)
class DoorOpenRule:
    """The door has been open longer than `max_open_s`. Reading: True when the door is closed."""

    key: str = "door_open_too_long"
    max_open_s: float = 120.0
    severity: str = "warning"

    def evaluate(self, state: RuleState, reading: bool | None, now: float) -> tuple[RuleState, list[Effect]]:
        if reading is None:
            return state, []
        closed = bool(reading)

        def make(held: float) -> Raise:
            return Raise(self.key, "door_open_too_long", f"door open for {held:.0f} s", self.severity,
                         {"open_s": round(held, 1), "limit_s": self.max_open_s})

        return _debounced(state, not closed, closed, now, self.max_open_s, make,
                          Clear(self.key, "door closed"))


@dataclass(frozen=True)
class DeviceOfflineRule:
    """A device stopped answering. Reading: True when online. The driver already debounces
    (offline after N failed polls), so the default delay is 0."""

    key: str
    device: str
    delay_s: float = 0.0
    severity: str = "critical"

    def evaluate(self, state: RuleState, reading: bool | None, now: float) -> tuple[RuleState, list[Effect]]:
        online = bool(reading)

        def make(held: float) -> Raise:
            return Raise(self.key, "device_offline", f"device {self.device} is not answering", self.severity,
                         {"device": self.device})

        return _debounced(state, not online, online, now, self.delay_s, make,
                          Clear(self.key, f"device {self.device} answering again"))


@dataclass(frozen=True)
class SensorRule:
    """A sensor is implausible: NaN, outside its map range, a fault flag, or stuck.

    Reading: `(value, fault_flag)` or a bare value. "Stuck" means the exact same value for
    `stuck_after_s` (a live probe in a cycling fridge always moves by a tenth now and then);
    `None` disables the stuck check.
    """

    key: str
    sensor: str
    low: float = -math.inf
    high: float = math.inf
    stuck_after_s: float | None = None
    severity: str = "critical"

    def evaluate(self, state: RuleState, reading: Any, now: float) -> tuple[RuleState, list[Effect]]:
        value, flag = reading if isinstance(reading, tuple) else (reading, False)
        if value is None:
            return state, []
        value = float(value)
        if state.last_value is None or value != state.last_value or math.isnan(value):
            state = replace(state, last_value=value, last_change=now)
        problem = self.problem(value, bool(flag), state, now)

        def make(held: float) -> Raise:
            return Raise(self.key, "sensor_fault", f"sensor {self.sensor}: {problem}", self.severity,
                         {"sensor": self.sensor, "value": None if math.isnan(value) else value,
                          "problem": problem})

        return _debounced(state, problem is not None, problem is None, now, 0.0, make,
                          Clear(self.key, f"sensor {self.sensor} plausible again"))

    def problem(self, value: float, flag: bool, state: RuleState, now: float) -> str | None:
        """Why the value cannot be trusted, or None when it is plausible."""
        if math.isnan(value):
            return "not a number"
        if flag:
            return "device reports a probe fault"
        if not self.low <= value <= self.high:
            return f"{value:g} outside {self.low:g}..{self.high:g}"
        if (self.stuck_after_s is not None and state.last_change is not None
                and now - state.last_change >= self.stuck_after_s):
            return f"value stuck at {value:g} for {now - state.last_change:.0f} s"
        return None

"""Eco schedule for the refrigeration: night setback and door-activity-aware lights/fan. Pure.

What it saves (see docs/operations-features.md): in eco the cabinet lights go off (their power and
the heat they put into the cabinet), the evaporator fan runs only with the compressor, and the
thermostat setpoint rises by `setback_c` — but never so far that the controller's cut-in point
(setpoint + hysteresis/2) comes within `margin_c` of the food-safety limit. Eco applies in the
night window (local hours) and, by day, after `idle_after_s` without any door activity; a door
opening wakes the machine (normal mode) for `wake_s`. A warm cabinet (within `margin_c` of the
limit) always forces normal mode, so eco never adds to an excursion.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EcoConfig:
    """Limits and schedule (hours are local time, 0-24; a window may wrap midnight)."""

    normal_setpoint_c: float = 3.0
    setback_c: float = 1.0
    limit_c: float = 5.0  # the food-safety limit (config [temperature] food_safety_limit_c)
    hysteresis_c: float = 2.0  # the controller's own band around its setpoint
    margin_c: float = 0.3
    night_start_h: float = 22.0
    night_end_h: float = 7.0
    idle_after_s: float = 2 * 3600.0
    wake_s: float = 15 * 60.0

    def __post_init__(self) -> None:
        if self.setback_c < 0 or self.margin_c < 0 or self.wake_s < 0 or self.idle_after_s < 0:
            raise ValueError("setback_c, margin_c, wake_s and idle_after_s must be >= 0")
        for h in (self.night_start_h, self.night_end_h):
            if not 0 <= h <= 24:
                raise ValueError(f"hour {h} outside 0..24")

    @property
    def eco_setpoint_c(self) -> float:
        """The raised setpoint, capped so the cut-in stays margin_c below the limit (never lowered)."""
        cap = self.limit_c - self.hysteresis_c / 2 - self.margin_c
        return max(self.normal_setpoint_c, min(self.normal_setpoint_c + self.setback_c, cap))


@dataclass(frozen=True)
class Mode:
    """What the daemon writes to the controller and the I/O module."""

    eco: bool
    setpoint_c: float
    lights_on: bool
    fan_eco: bool
    reason: str


def in_window(hour: float, start_h: float, end_h: float) -> bool:
    """Whether local `hour` (0-24) lies in [start, end), wrapping midnight when start > end."""
    if start_h == end_h:
        return False
    return start_h <= hour < end_h if start_h < end_h else hour >= start_h or hour < end_h


def decide(cfg: EcoConfig, hour: float, since_door_s: float | None, cabinet_c: float | None) -> Mode:
    """The mode for now. `since_door_s`: seconds since the door last opened or closed (None = never
    seen since start, treated as idle); `cabinet_c`: the trusted cabinet reading (None = unknown)."""
    normal = Mode(False, cfg.normal_setpoint_c, True, False, "")
    if cabinet_c is None or cabinet_c != cabinet_c:
        return _why(normal, "no_temperature")
    if cabinet_c >= cfg.limit_c - cfg.margin_c:
        return _why(normal, "cabinet_warm")
    if since_door_s is not None and since_door_s < cfg.wake_s:
        return _why(normal, "door_activity")
    if in_window(hour, cfg.night_start_h, cfg.night_end_h):
        return Mode(True, cfg.eco_setpoint_c, False, True, "night")
    if since_door_s is None or since_door_s >= cfg.idle_after_s:
        return Mode(True, cfg.eco_setpoint_c, False, True, "idle")
    return _why(normal, "day")


def _why(mode: Mode, reason: str) -> Mode:
    return Mode(mode.eco, mode.setpoint_c, mode.lights_on, mode.fan_eco, reason)

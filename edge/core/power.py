"""Mains power from the I/O module's mains-fail input, supply voltage and cabinet humidity. Pure.

A mains failure is confirmed after the input has read "failed" for `fail_confirm_s` (a blip of a
brown-out is not an outage) and over after it has read "ok" for `restore_confirm_s`; the outage
length runs from the first failed reading to the first good one of the confirmed return. `None`
(module offline) holds the state: losing the bus is the device-offline alarm's business.

Supply voltage and humidity are threshold alarms (`edge.core.alarms.ThresholdRule`): voltage
outside ±10 % of 230 V (EN 50160) for `voltage_delay_s`; humidity above `humidity_high_pct` for
`humidity_delay_s` (condensation on glass and labels, mould on food).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edge.core.alarms import ThresholdRule


@dataclass(frozen=True)
class PowerLimits:
    fail_confirm_s: float = 2.0
    restore_confirm_s: float = 5.0
    low_v: float = 207.0
    high_v: float = 253.0
    voltage_delay_s: float = 60.0
    humidity_high_pct: float = 85.0
    humidity_delay_s: float = 1800.0

    def __post_init__(self) -> None:
        if min(self.fail_confirm_s, self.restore_confirm_s, self.voltage_delay_s, self.humidity_delay_s) < 0:
            raise ValueError("delays must be >= 0")
        if not 0 < self.low_v < self.high_v:
            raise ValueError("need 0 < low_v < high_v")


@dataclass(frozen=True)
class MainsState:
    """`on_mains` is the confirmed state; the rest times the change being confirmed."""

    on_mains: bool = True
    failed_at: float | None = None  # first failed reading of the current (or pending) outage
    pending_since: float | None = None  # first reading disagreeing with `on_mains`


@dataclass(frozen=True)
class MainsFailed:
    at: float


@dataclass(frozen=True)
class MainsRestored:
    at: float
    outage_s: float


MainsEffect = MainsFailed | MainsRestored


def observe(
    state: MainsState, mains_ok: bool | None, now: float, limits: PowerLimits
) -> tuple[MainsState, list[MainsEffect]]:
    """Feed one reading of the mains input (None = no data)."""
    if mains_ok is None:
        return state, []
    if mains_ok == state.on_mains:  # a change that was not confirmed is forgotten
        return replace(state, pending_since=None, failed_at=None if state.on_mains else state.failed_at), []
    since = state.pending_since if state.pending_since is not None else now
    if not mains_ok:  # on mains, reading failed
        if now - since < limits.fail_confirm_s:
            return replace(state, pending_since=since), []
        return MainsState(on_mains=False, failed_at=since), [MainsFailed(since)]
    if now - since < limits.restore_confirm_s:  # failed, reading ok
        return replace(state, pending_since=since), []
    start = state.failed_at if state.failed_at is not None else since
    return MainsState(), [MainsRestored(since, max(0.0, since - start))]


def voltage_rules(name: str, limits: PowerLimits) -> list[ThresholdRule]:
    """Low and high supply-voltage alarms (only judged while on mains: 0 V in an outage is expected)."""
    return [
        ThresholdRule(
            f"supply_low:{name}",
            "supply_voltage_low",
            limits.low_v,
            "low",
            limits.voltage_delay_s,
            3.0,
            unit="V",
        ),
        ThresholdRule(
            f"supply_high:{name}",
            "supply_voltage_high",
            limits.high_v,
            "high",
            limits.voltage_delay_s,
            3.0,
            unit="V",
        ),
    ]


def humidity_rule(name: str, limits: PowerLimits) -> ThresholdRule:
    return ThresholdRule(
        f"humidity_high:{name}",
        "humidity_high",
        limits.humidity_high_pct,
        "high",
        limits.humidity_delay_s,
        5.0,
        unit="%RH",
    )

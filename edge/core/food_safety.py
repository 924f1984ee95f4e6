"""Food-safety lockout for time/temperature-controlled food (FDA Food Code 4-204.111). Pure.

Rule (see docs/food-safety.md): perishable SKUs become unsellable once the cabinet has been above
`limit_c` (default 5 °C) continuously for longer than `max_s` (default 30 min). After a restock
the product just loaded may pull down: an excursion is tolerated until `restock_grace_s` after the
restock. A missing temperature (controller offline) counts as an excursion — we cannot prove the
food is cold, and a 30-minute allowance keeps a short comms glitch from locking the machine.
Once locked, only a technician's `clear(actor, now)` unlocks; time and temperature alone never do.

Times are seconds on the caller's clock (monotonic in memory; the service converts to wall time
when it persists the excursion start, so a restart does not reset the excursion clock).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

NEAR_EXPIRY_DAYS = 1  # a lane whose best-before is today or tomorrow is "near"


@dataclass(frozen=True)
class Limits:
    """The three configurable limits (config section [temperature])."""

    limit_c: float = 5.0
    max_s: float = 1800.0
    restock_grace_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_s < 0 or self.restock_grace_s < 0:
            raise ValueError("max_s and restock_grace_s must be >= 0")


@dataclass(frozen=True)
class State:
    """Excursion and lockout state. `locked` survives restarts through the ledger's lockouts table."""

    locked: bool = False
    above_since: float | None = None  # start of the current excursion (above limit or no data)
    peak_c: float | None = None  # highest temperature seen during the excursion
    grace_until: float | None = None  # end of the restock grace period
    locked_at: float | None = None


@dataclass(frozen=True)
class Lock:
    """Engage the lockout (one `lockouts` row, a critical alarm, an outbox event)."""

    reason: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Unlock:
    """A technician cleared the lockout."""

    actor: str


Effect = Lock | Unlock


def observe(state: State, cabinet_c: float | None, now: float, limits: Limits) -> tuple[State, list[Effect]]:
    """Feed one cabinet reading (None = no data). Returns the new state and a Lock when one engages."""
    excursion = cabinet_c is None or cabinet_c != cabinet_c or cabinet_c > limits.limit_c  # NaN is no data
    if not excursion:
        return replace(state, above_since=None, peak_c=None), []
    since = state.above_since if state.above_since is not None else now
    peak = state.peak_c
    if cabinet_c is not None and cabinet_c == cabinet_c:
        peak = cabinet_c if peak is None else max(peak, cabinet_c)
    state = replace(state, above_since=since, peak_c=peak)
    if state.locked:
        return state, []
    in_grace = state.grace_until is not None and now < state.grace_until
    if now - since > limits.max_s and not in_grace:
        reason = "no_temperature" if cabinet_c is None or cabinet_c != cabinet_c else "above_limit"
        data = {"limit_c": limits.limit_c, "max_s": limits.max_s, "above_s": round(now - since, 1),
                "peak_c": None if peak is None else round(peak, 2), "cause": reason}
        return replace(state, locked=True, locked_at=now), [Lock(reason, data)]
    return state, []


def restocked(state: State, now: float, limits: Limits) -> State:
    """A restock (or service visit) starts the grace period in which loaded product pulls down."""
    return replace(state, grace_until=now + limits.restock_grace_s)


def clear(state: State, actor: str, now: float) -> tuple[State, list[Effect]]:
    """A technician clears the lockout. The excursion clock restarts from now if still warm."""
    if not state.locked:
        return state, []
    if not actor:
        raise ValueError("a lockout is cleared by a named technician")
    restart = now if state.above_since is not None else None
    return replace(state, locked=False, locked_at=None, above_since=restart, peak_c=None), [Unlock(actor)]


def sellable(state: State, perishable: bool) -> bool:
    """Whether a SKU may be sold now: only perishable goods are held by the lockout."""
    return not (state.locked and perishable)


def expiry(best_before: str | None, today: dt.date, count: int) -> str | None:
    """A lane's best-before (ISO date) against `today`: "expired" (past its date), "near" (within
    NEAR_EXPIRY_DAYS), "ok", or None (no date or lane empty)."""
    if not best_before or count <= 0:
        return None
    try:
        left = (dt.date.fromisoformat(best_before) - today).days
    except ValueError:
        return None
    return "expired" if left < 0 else "near" if left <= NEAR_EXPIRY_DAYS else "ok"

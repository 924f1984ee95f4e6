"""Take-and-go session state machine — pure: `step(session, event, now) -> (session, effects)`.

authorized → (capture before) → unlocking → unlocked → open → closed → (lock, wait for stable
weights, capture after, recognize) → deciding → charged | needs_review | void.
A door that is never opened voids the session and relocks; a door open too long raises an alarm
(once) and the session goes on. The service performs the effects and feeds results back as events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

State = Literal["authorized", "unlocking", "unlocked", "open", "closed", "deciding",
                "charged", "needs_review", "void"]
FINAL: frozenset[str] = frozenset({"charged", "needs_review", "void"})
EventKind = Literal["start", "before_captured", "unlocked", "door_opened", "door_closed",
                    "after_ready", "decided", "tick", "failed"]
EffectKind = Literal["capture_before", "unlock", "lock", "alarm", "settle_and_capture_after",
                     "decide", "finish"]


@dataclass(frozen=True)
class Timeouts:
    never_opened_s: float = 30.0
    open_too_long_s: float = 120.0
    settle_s: float = 10.0


@dataclass(frozen=True)
class Session:
    session_id: str
    customer_ref: str
    limit_amount: int | None
    currency: str
    offline: bool = False
    state: State = "authorized"
    entered_at: float = 0.0
    opened_at: float | None = None
    alarmed_open: bool = False
    outcome: str = ""
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def final(self) -> bool:
        return self.state in FINAL


@dataclass(frozen=True)
class Event:
    kind: EventKind
    detail: str = ""  # e.g. the decision status for "decided", a reason for "failed"


@dataclass(frozen=True)
class Effect:
    kind: EffectKind
    detail: str = ""


def _go(s: Session, state: State, now: float, **kw: object) -> Session:
    return replace(s, state=state, entered_at=now, **kw)  # type: ignore[arg-type]


def step(s: Session, ev: Event, now: float) -> tuple[Session, list[Effect]]:
    """Advance one event. Unexpected events in a state change nothing (and produce no effects)."""
    if s.final:
        return s, []
    if ev.kind == "failed":  # any hard failure before the door opened voids; after, it goes to review
        if s.state in ("authorized", "unlocking", "unlocked"):
            return _go(s, "void", now, outcome=ev.detail), [Effect("lock"), Effect("finish", "void")]
        return _go(s, "needs_review", now, outcome=ev.detail), [Effect("lock"), Effect("finish", "needs_review")]
    if ev.kind == "tick":
        return _tick(s, now)
    table: dict[tuple[str, str], tuple[State, list[Effect]]] = {
        ("authorized", "start"): ("authorized", [Effect("capture_before")]),
        ("authorized", "before_captured"): ("unlocking", [Effect("unlock")]),
        ("unlocking", "unlocked"): ("unlocked", []),
        ("unlocked", "door_opened"): ("open", []),
        ("unlocking", "door_opened"): ("open", []),
        ("open", "door_closed"): ("closed", [Effect("lock"), Effect("settle_and_capture_after")]),
        ("closed", "after_ready"): ("deciding", [Effect("decide")]),
    }
    if (s.state, ev.kind) in table:
        state, effects = table[(s.state, ev.kind)]
        extra = {"opened_at": now} if ev.kind == "door_opened" else {}
        return _go(s, state, now, **extra), effects
    if s.state == "deciding" and ev.kind == "decided":
        final: State = "charged" if ev.detail == "charge" else "void" if ev.detail == "nothing_taken" \
            else "needs_review"
        return _go(s, final, now, outcome=ev.detail), [Effect("finish", final)]
    return s, []


def _tick(s: Session, now: float) -> tuple[Session, list[Effect]]:
    t = s.timeouts
    if s.state in ("unlocking", "unlocked") and now - s.entered_at > t.never_opened_s:
        return _go(s, "void", now, outcome="door_never_opened"), [Effect("lock"), Effect("finish", "void")]
    if s.state == "open" and s.opened_at is not None and not s.alarmed_open \
            and now - s.opened_at > t.open_too_long_s:
        return replace(s, alarmed_open=True), [Effect("alarm", "door_open_too_long")]
    return s, []

"""Public result types of the vend board driver (what callers see; no wire details)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from drivers.vend_board.codec import ErrorCode


class VendOutcome(enum.Enum):
    """What happened to one vend, as decided by the board's motor and drop sensor."""

    OK = "ok"
    JAM = "jam"
    EMPTY = "empty"
    MOTOR_OVERCURRENT = "motor_overcurrent"
    DROP_NOT_DETECTED = "drop_not_detected"
    BAD_SLOT = "bad_slot"

    @classmethod
    def from_code(cls, code: ErrorCode) -> VendOutcome:
        return cls(code.name.lower())


@dataclass(frozen=True)
class VendResult:
    seq: int
    slot: str
    outcome: VendOutcome
    motor_ms: int


@dataclass(frozen=True)
class VendQuery:
    """The board's memory of an earlier vend (for reconciliation after a restart)."""

    seq: int
    state: str  # 'unknown' | 'in_progress' | 'done'
    outcome: VendOutcome | None = None
    slot: str | None = None


@dataclass(frozen=True)
class DoorState:
    closed: bool
    locked: bool


@dataclass(frozen=True)
class BoardStatus:
    firmware: str
    busy: bool
    door: DoorState
    counters: dict[str, int] = field(default_factory=dict)

"""Public result types of the vend board driver (what callers see; no wire details)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from drivers.errors import ProtocolError
from drivers.vend_board.messages import OUTCOME_CODES, ErrorCode, MotorCurrent, VendState

__all__ = ["BoardInfo", "BoardStatus", "DoorState", "MotorCurrent", "VendOutcome", "VendQuery", "VendResult",
           "plausible_current", "state_name"]


class VendOutcome(enum.Enum):
    """What happened to one vend, as decided by the board's motor and drop sensor."""

    OK = "ok"
    JAM = "jam"
    EMPTY = "empty"
    MOTOR_OVERCURRENT = "motor_overcurrent"
    DROP_NOT_DETECTED = "drop_not_detected"
    BAD_SLOT = "bad_slot"

    @classmethod
    def from_code(cls, code: int) -> VendOutcome:
        """A vend outcome byte (0..4) -> VendOutcome; anything else is a ProtocolError (a board fault)."""
        if code not in OUTCOME_CODES:
            raise ProtocolError(f"vend outcome code {code} is outside the protocol (0..4)")
        return cls(ErrorCode(code).name.lower())


def state_name(state: int) -> str:
    """A VEND_RESULT state byte -> 'unknown' | 'in_progress' | 'done' | 'interrupted'; else ProtocolError."""
    try:
        return VendState(state).name.lower()
    except ValueError:
        raise ProtocolError(f"vend result state {state} is outside the protocol (0..3)") from None


def plausible_current(current: MotorCurrent | None) -> MotorCurrent | None:
    """The board's motor current figure if it can be true (a peak not below the mean), else None.

    The figure is a diagnostic: one that breaks the protocol's rule is dropped, the vend stands."""
    if current is None or current.peak_ma < current.mean_ma:
        return None
    return current


@dataclass(frozen=True)
class VendResult:
    """The board's word on a finished vend: ``slot`` is the slot the BOARD says turned.

    ``current`` is None when the board does not report motor current (the short VEND_DONE)."""

    seq: int
    slot: str
    outcome: VendOutcome
    motor_ms: int
    boot: int = 0
    current: MotorCurrent | None = None


@dataclass(frozen=True)
class VendQuery:
    """The board's memory of an earlier vend (for reconciliation after a restart)."""

    seq: int
    state: str  # 'unknown' | 'in_progress' | 'done' | 'interrupted'
    outcome: VendOutcome | None = None
    slot: str | None = None
    boot: int = 0  # the boot id the board answered from
    memory: int = 0  # vend outcomes the board keeps across a reset (from HELLO)
    motor_ms: int = 0
    current: MotorCurrent | None = None


@dataclass(frozen=True)
class BoardInfo:
    """What the board said at the handshake (HELLO_REPLY)."""

    version: int
    boot: int
    memory: int
    firmware: str
    last_seq: int = 0  # the highest caller seq the board remembers: the next one must be above it


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

"""Typed messages of the vend board wire protocol v2 (docs/protocols/vend-board.md): the codes, the
message dataclasses and the slot encoding. The bytes (frame, CRC, payload layouts) are ``codec.py``,
which re-exports every name here, so ``drivers.vend_board.codec`` stays the one import path.

Values the *framing* can carry but the protocol does not define (a vend outcome of 6, a result
state of 9, a NAK reason of 200) are kept as plain integers and left to the session layer to
refuse as a ``ProtocolError``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from drivers.errors import ProtocolError

PROTOCOL_VERSION = 2
NO_OUTCOME = 0xFF


class Code(enum.IntEnum):
    """Command (controller -> board, < 0x80) and response (board -> controller, >= 0x80) codes."""

    STATUS = 0x01
    VEND = 0x02
    VEND_RESULT = 0x03
    DOOR_UNLOCK = 0x04
    DOOR_STATE = 0x05
    LIGHT = 0x06
    HELLO = 0x07
    ACK = 0x80
    NAK = 0x81
    STATUS_REPLY = 0x82
    VEND_DONE = 0x83
    VEND_RESULT_REPLY = 0x84
    DOOR_STATE_REPLY = 0x85
    HELLO_REPLY = 0x86


class ErrorCode(enum.IntEnum):
    """Vend outcomes (0..4) and NAK reasons (5..8) share one code space."""

    OK = 0
    JAM = 1
    EMPTY = 2
    MOTOR_OVERCURRENT = 3
    DROP_NOT_DETECTED = 4
    BAD_SLOT = 5
    BUSY = 6
    BAD_FRAME = 7
    STALE_BOOT = 8


OUTCOME_CODES = frozenset(range(0, 5))  # what VEND_DONE / VEND_RESULT_REPLY may carry
NAK_CODES = frozenset(range(5, 9))


class VendState(enum.IntEnum):
    UNKNOWN = 0
    IN_PROGRESS = 1
    DONE = 2
    INTERRUPTED = 3  # the board had started this seq when it lost power; the drop was not decided


# Every message has ``seq`` first and ``boot`` after its fields (default 0: HELLO, or tests that don't
# care); the optional motor current of VEND_DONE / VEND_RESULT_REPLY comes after ``boot``.


@dataclass(frozen=True)
class MotorCurrent:
    """The motor current of one vend as the board measured it, inrush (the first 100 ms) excluded:
    ``mean_ma`` over the run (follows the spiral's load: the wear trend) and ``peak_ma`` (a binding
    product or a stalling spiral). Both u16 mA on the wire; a motor that did not turn reports 0, 0."""

    mean_ma: int
    peak_ma: int


@dataclass(frozen=True)
class StatusReq:
    seq: int
    boot: int = 0


@dataclass(frozen=True)
class VendReq:
    seq: int
    slot: str
    boot: int = 0


@dataclass(frozen=True)
class VendResultReq:
    seq: int
    target: int
    boot: int = 0


@dataclass(frozen=True)
class DoorUnlockReq:
    seq: int
    ms: int
    boot: int = 0


@dataclass(frozen=True)
class DoorStateReq:
    seq: int
    boot: int = 0


@dataclass(frozen=True)
class LightReq:
    seq: int
    on: bool
    boot: int = 0


@dataclass(frozen=True)
class Ack:
    seq: int
    boot: int = 0


@dataclass(frozen=True)
class Nak:
    seq: int
    error: int  # an ErrorCode 5..8 when the board keeps to the protocol
    boot: int = 0


@dataclass(frozen=True)
class StatusReply:
    seq: int
    firmware: str
    busy: bool
    door_closed: bool
    door_locked: bool
    counters: dict[str, int] = field(default_factory=dict)
    boot: int = 0


@dataclass(frozen=True)
class VendDone:
    seq: int
    slot: str
    outcome: int  # an ErrorCode 0..4 when the board keeps to the protocol
    motor_ms: int
    boot: int = 0
    current: MotorCurrent | None = None  # None: the board sent the short form (does not measure it)


@dataclass(frozen=True)
class VendResultReply:
    seq: int
    target: int
    state: int  # a VendState when the board keeps to the protocol
    outcome: int | None  # None on the wire is 0xFF
    slot: str | None
    motor_ms: int
    boot: int = 0
    current: MotorCurrent | None = None  # None: the short form (no figure, or no outcome yet)


@dataclass(frozen=True)
class DoorStateReply:
    seq: int
    closed: bool
    locked: bool
    boot: int = 0


@dataclass(frozen=True)
class HelloReq:
    seq: int
    version: int = PROTOCOL_VERSION
    boot: int = 0


@dataclass(frozen=True)
class HelloReply:
    seq: int
    version: int
    memory: int  # how many vend outcomes the board keeps by seq across a reset (0 = none)
    firmware: str
    last_seq: int = 0  # the highest caller seq (VEND, DOOR_UNLOCK) the board remembers (0 = none)
    boot: int = 0


Frame = (StatusReq | VendReq | VendResultReq | DoorUnlockReq | DoorStateReq | LightReq | HelloReq | Ack | Nak
         | StatusReply | VendDone | VendResultReply | DoorStateReply | HelloReply)


def encode_slot(slot: str) -> bytes:
    """'A1'..'Z99' -> row letter (ASCII) + column (u8). Raises ValueError for anything else."""
    if not (2 <= len(slot) <= 3) or not ("A" <= slot[0] <= "Z") or not slot[1:].isdigit() \
            or not slot[1:].isascii() or slot[1] == "0":
        raise ValueError(f"bad slot {slot!r}: expected 'A1'..'Z99'")
    return bytes((ord(slot[0]), int(slot[1:])))


def decode_slot(raw: bytes) -> str:
    """Inverse of encode_slot; raises ProtocolError for bytes that are not a slot."""
    row, col = raw[0], raw[1]
    if not (0x41 <= row <= 0x5A) or not (1 <= col <= 99):
        raise ProtocolError(f"bad slot bytes {raw.hex()}")
    return f"{chr(row)}{col}"


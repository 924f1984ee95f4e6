"""Pure codec for the spiral vend board wire protocol v2 (see docs/protocols/vend-board.md).

Frame: ``A6 | LEN | SEQ(u32 BE) | BOOT(u32 BE) | CODE | PAYLOAD[LEN] | CRC16(BE)``; the CRC is
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, ``binascii.crc_hqx(data, 0xFFFF)``)
over LEN..PAYLOAD. BOOT is the board's boot id: the board puts its own in every frame it sends; the
controller puts the one it believes current (0 only in HELLO).
No I/O, no logging, no clock: bytes in, typed messages out. The only exception raised is
``ProtocolError`` (as ``FrameError``, which says how many bytes to drop to resync).

The message types live in ``messages.py`` and are re-exported here (one import path). Values the
*framing* can carry but the protocol does not define (a vend outcome of 6, a result state of 9, a
NAK reason of 200) are decoded as plain integers and left to the session layer to refuse as a
``ProtocolError``: a well-formed frame saying something impossible is a board fault, not line noise,
and must not be silently dropped.
"""

from __future__ import annotations

import binascii
import struct

from drivers.errors import ProtocolError
from drivers.vend_board.messages import (
    NAK_CODES,
    NO_OUTCOME,
    OUTCOME_CODES,
    PROTOCOL_VERSION,
    Ack,
    Code,
    DoorStateReply,
    DoorStateReq,
    DoorUnlockReq,
    ErrorCode,
    Frame,
    HelloReply,
    HelloReq,
    LightReq,
    MotorCurrent,
    Nak,
    StatusReply,
    StatusReq,
    VendDone,
    VendReq,
    VendResultReply,
    VendResultReq,
    VendState,
    decode_slot,
    encode_slot,
)

__all__ = [
    "CRC_LEN", "HEADER_LEN", "MAX_PAYLOAD", "MAX_SEQ", "NAK_CODES", "NO_OUTCOME", "OUTCOME_CODES",
    "PROTOCOL_VERSION", "SOF", "SOF_V1", "V1_HEADER_LEN", "Ack", "Code", "DoorStateReply", "DoorStateReq",
    "DoorUnlockReq", "ErrorCode", "Frame", "FrameError", "FrameReader", "HelloReply", "HelloReq", "LightReq",
    "MotorCurrent", "Nak", "StatusReply", "StatusReq", "VendDone", "VendReq", "VendResultReply",
    "VendResultReq", "VendState", "crc16", "decode", "decode_slot", "encode", "encode_slot",
    "encode_v1_status", "find_v1_frame",
]

SOF = 0xA6
SOF_V1 = 0xA5  # protocol v1 (no boot id); only recognised to refuse a v1 board clearly
HEADER_LEN = 11  # SOF, LEN, SEQ(4), BOOT(4), CODE
V1_HEADER_LEN = 7
CRC_LEN = 2
MAX_PAYLOAD = 128
MAX_SEQ = 0xFFFFFFFF


class FrameError(ProtocolError):
    """Bytes at the head of the buffer are not a valid frame; drop ``skip`` bytes and decode again."""

    def __init__(self, message: str, skip: int, crc: bool = False) -> None:
        super().__init__(message)
        self.skip = skip
        self.crc = crc


# ---- primitives -------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (check value for b"123456789" is 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)


def _frame(seq: int, boot: int, code: int, payload: bytes = b"") -> bytes:
    if not 0 <= seq <= MAX_SEQ or not 0 <= boot <= MAX_SEQ:
        raise ValueError(f"seq {seq} / boot {boot} outside u32")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = struct.pack(">BIIB", len(payload), seq, boot, code) + payload
    return bytes((SOF,)) + body + struct.pack(">H", crc16(body))


def encode_v1_status(seq: int) -> bytes:
    """A protocol-v1 STATUS request (``A5 | LEN | SEQ | CODE | CRC``): the probe that tells a v1 board
    from a silent line when HELLO gets no answer."""
    body = struct.pack(">BIB", 0, seq, Code.STATUS)
    return bytes((SOF_V1,)) + body + struct.pack(">H", crc16(body))


def find_v1_frame(buf: bytes) -> int | None:
    """The seq of the first well-formed v1 frame (valid CRC) anywhere in ``buf``, else None."""
    start = buf.find(SOF_V1)
    while start >= 0:
        if start + 2 <= len(buf):
            total = V1_HEADER_LEN + buf[start + 1] + CRC_LEN
            frame = buf[start:start + total]
            if len(frame) == total and crc16(frame[1:-2]) == int.from_bytes(frame[-2:], "big"):
                return int.from_bytes(frame[2:6], "big")
        start = buf.find(SOF_V1, start + 1)
    return None


def _pack_counters(counters: dict[str, int]) -> bytes:
    out = bytearray((len(counters),))
    for name, value in counters.items():
        raw = name.encode("ascii")
        out += bytes((len(raw),)) + raw + struct.pack(">I", value & MAX_SEQ)
    return bytes(out)


def _unpack_counters(raw: bytes) -> dict[str, int]:
    counters: dict[str, int] = {}
    pos = 1
    for _ in range(raw[0]):
        n = raw[pos]
        name = raw[pos + 1:pos + 1 + n].decode("ascii")
        (value,) = struct.unpack_from(">I", raw, pos + 1 + n)
        counters[name] = value
        pos += 1 + n + 4
    if pos != len(raw):
        raise ValueError("trailing bytes after counters")
    return counters


# ---- encode -----------------------------------------------------------------------------------


def encode(msg: Frame) -> bytes:
    """Typed message -> wire bytes. Raises ValueError for values that cannot be encoded."""
    match msg:
        case StatusReq(seq, boot) | DoorStateReq(seq, boot) | Ack(seq, boot):
            return _frame(seq, boot, _CODE_OF[type(msg)])
        case VendReq(seq, slot, boot):
            return _frame(seq, boot, Code.VEND, encode_slot(slot))
        case VendResultReq(seq, target, boot):
            return _frame(seq, boot, Code.VEND_RESULT, struct.pack(">I", target))
        case DoorUnlockReq(seq, ms, boot):
            return _frame(seq, boot, Code.DOOR_UNLOCK, struct.pack(">H", ms))
        case LightReq(seq, on, boot):
            return _frame(seq, boot, Code.LIGHT, bytes((int(on),)))
        case HelloReq(seq, version, boot):
            return _frame(seq, boot, Code.HELLO, bytes((version,)))
        case Nak(seq, error, boot):
            return _frame(seq, boot, Code.NAK, bytes((error,)))
        case StatusReply(seq, fw, busy, closed, locked, counters, boot):
            raw = fw.encode("ascii")
            head = bytes((len(raw),)) + raw + bytes((int(busy), int(closed), int(locked)))
            return _frame(seq, boot, Code.STATUS_REPLY, head + _pack_counters(counters))
        case VendDone(seq, slot, outcome, motor_ms, boot, current):
            return _frame(seq, boot, Code.VEND_DONE, encode_slot(slot) + struct.pack(">BH", outcome, motor_ms)
                          + _pack_current(current))
        case VendResultReply(seq, target, state, outcome, slot, motor_ms, boot, current):
            oc = NO_OUTCOME if outcome is None else int(outcome)
            sl = b"\x00\x00" if slot is None else encode_slot(slot)
            return _frame(seq, boot, Code.VEND_RESULT_REPLY, struct.pack(">IBB", target, state, oc) + sl
                          + struct.pack(">H", motor_ms) + _pack_current(current))
        case DoorStateReply(seq, closed, locked, boot):
            return _frame(seq, boot, Code.DOOR_STATE_REPLY, bytes((int(closed), int(locked))))
        case HelloReply(seq, version, memory, fw, last_seq, boot):
            raw = fw.encode("ascii")
            return _frame(seq, boot, Code.HELLO_REPLY,
                          struct.pack(">BHIB", version, memory, last_seq, len(raw)) + raw)
    raise ValueError(f"cannot encode {msg!r}")


_CODE_OF: dict[type, Code] = {StatusReq: Code.STATUS, DoorStateReq: Code.DOOR_STATE, Ack: Code.ACK}


# ---- decode -----------------------------------------------------------------------------------

_FIXED_LEN = {Code.STATUS: 0, Code.VEND: 2, Code.VEND_RESULT: 4, Code.DOOR_UNLOCK: 2, Code.DOOR_STATE: 0,
              Code.LIGHT: 1, Code.HELLO: 1, Code.ACK: 0, Code.NAK: 1, Code.DOOR_STATE_REPLY: 2}
# the short form (a board that does not measure motor current) or the long form (+ mean, peak mA)
_CURRENT_LEN = 4
_VEND_LENS = {Code.VEND_DONE: (5, 5 + _CURRENT_LEN), Code.VEND_RESULT_REPLY: (10, 10 + _CURRENT_LEN)}


def _pack_current(current: MotorCurrent | None) -> bytes:
    if current is None:
        return b""
    if not (0 <= current.mean_ma <= 0xFFFF and 0 <= current.peak_ma <= 0xFFFF):
        raise ValueError(f"motor current {current} outside u16 mA")
    return struct.pack(">HH", current.mean_ma, current.peak_ma)


def _unpack_current(raw: bytes) -> MotorCurrent | None:
    """The optional tail of VEND_DONE / VEND_RESULT_REPLY: absent (None) or mean u16, peak u16."""
    if not raw:
        return None
    mean_ma, peak_ma = struct.unpack(">HH", raw)
    return MotorCurrent(mean_ma, peak_ma)


def _bool(b: int) -> bool:
    if b > 1:
        raise ValueError(f"flag byte {b:#x} is not 0/1")
    return b == 1


def _parse(seq: int, boot: int, code: Code, p: bytes) -> Frame:
    """Payload -> message. May raise ValueError/IndexError/struct.error; decode() maps them."""
    if code in _FIXED_LEN and len(p) != _FIXED_LEN[code]:
        raise ValueError(f"{code.name} payload is {len(p)} bytes, expected {_FIXED_LEN[code]}")
    if code in _VEND_LENS and len(p) not in _VEND_LENS[code]:
        raise ValueError(f"{code.name} payload is {len(p)} bytes, expected one of {_VEND_LENS[code]}")
    if code is Code.STATUS:
        return StatusReq(seq, boot)
    if code is Code.VEND:
        return VendReq(seq, decode_slot(p), boot)
    if code is Code.VEND_RESULT:
        return VendResultReq(seq, struct.unpack(">I", p)[0], boot)
    if code is Code.DOOR_UNLOCK:
        return DoorUnlockReq(seq, struct.unpack(">H", p)[0], boot)
    if code is Code.DOOR_STATE:
        return DoorStateReq(seq, boot)
    if code is Code.LIGHT:
        return LightReq(seq, _bool(p[0]), boot)
    if code is Code.HELLO:
        return HelloReq(seq, p[0], boot)
    if code is Code.ACK:
        return Ack(seq, boot)
    if code is Code.NAK:
        return Nak(seq, p[0], boot)
    if code is Code.STATUS_REPLY:
        n = p[0]
        fw = p[1:1 + n].decode("ascii")
        busy, closed, locked = (_bool(b) for b in p[1 + n:4 + n])
        return StatusReply(seq, fw, busy, closed, locked, _unpack_counters(p[4 + n:]), boot)
    if code is Code.VEND_DONE:
        outcome, motor_ms = struct.unpack(">BH", p[2:5])
        return VendDone(seq, decode_slot(p[:2]), outcome, motor_ms, boot, _unpack_current(p[5:]))
    if code is Code.VEND_RESULT_REPLY:
        target, state, oc = struct.unpack(">IBB", p[:6])
        slot = None if p[6:8] == b"\x00\x00" else decode_slot(p[6:8])
        outcome = None if oc == NO_OUTCOME else oc
        return VendResultReply(seq, target, state, outcome, slot, struct.unpack(">H", p[8:10])[0], boot,
                               _unpack_current(p[10:]))
    if code is Code.HELLO_REPLY:
        version, memory, last_seq, n = struct.unpack(">BHIB", p[:8])
        if len(p) != 8 + n:
            raise ValueError("HELLO_REPLY firmware length does not match the payload")
        return HelloReply(seq, version, memory, p[8:].decode("ascii"), last_seq, boot)
    return DoorStateReply(seq, _bool(p[0]), _bool(p[1]), boot)


def decode(buf: bytes | bytearray | memoryview) -> tuple[int, Frame | None]:
    """Decode the frame at the head of ``buf``.

    Returns ``(used, frame)``: ``(0, None)`` when more bytes are needed; ``(n, None)`` when ``n``
    leading bytes are not a frame start (drop them); ``(n, frame)`` for a whole valid frame.
    Raises ``FrameError`` (a ProtocolError) with ``skip`` for a bad CRC, length or payload.
    """
    data = bytes(buf)
    if not data:
        return 0, None
    if data[0] != SOF:
        idx = data.find(SOF)
        return (len(data) if idx < 0 else idx), None
    if len(data) < 2:
        return 0, None
    length = data[1]
    if length > MAX_PAYLOAD:
        raise FrameError(f"length {length} exceeds {MAX_PAYLOAD}", skip=1)
    total = HEADER_LEN + length + CRC_LEN
    if len(data) < total:
        return 0, None
    body = data[1:HEADER_LEN + length]
    (got,) = struct.unpack(">H", data[HEADER_LEN + length:total])
    if crc16(body) != got:
        raise FrameError(f"crc mismatch: got {got:04x}, computed {crc16(body):04x}", skip=1, crc=True)
    seq, boot, raw_code = struct.unpack(">IIB", data[2:HEADER_LEN])
    try:
        code = Code(raw_code)
        return total, _parse(seq, boot, code, data[HEADER_LEN:HEADER_LEN + length])
    except (ValueError, IndexError, struct.error, UnicodeDecodeError, ProtocolError) as exc:
        raise FrameError(f"bad frame code={raw_code:#04x}: {exc}", skip=total) from exc


class FrameReader:
    """Accumulates a byte stream and yields whole frames; resyncs on the next SOF after garbage.

    Counts instead of logging: ``crc_errors`` (bad CRC, impossible length or payload),
    ``garbage_bytes`` (bytes dropped while hunting for SOF).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.crc_errors = 0
        self.garbage_bytes = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Append bytes; return every complete valid frame now available, in order."""
        self._buf += data
        frames: list[Frame] = []
        while self._buf:
            try:
                used, frame = decode(self._buf)
            except FrameError as exc:
                self.crc_errors += 1
                del self._buf[:exc.skip]
                continue
            if used == 0:
                break
            del self._buf[:used]
            if frame is None:
                self.garbage_bytes += used
            else:
                frames.append(frame)
        return frames

    def drop_partial(self) -> list[Frame]:
        """A partial frame that has waited a whole reply timeout is noise: drop its SOF, rescan."""
        if not self._buf:
            return []
        self.crc_errors += 1
        del self._buf[:1]
        return self.feed(b"")

    @property
    def pending(self) -> int:
        return len(self._buf)

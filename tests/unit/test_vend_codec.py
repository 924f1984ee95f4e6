"""Golden bytes and parser robustness for the vend board codec (docs/protocols/vend-board.md)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.vend_board import codec
from drivers.vend_board.codec import (
    Ack,
    DoorStateReply,
    DoorStateReq,
    DoorUnlockReq,
    ErrorCode,
    FrameError,
    FrameReader,
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
    decode,
    encode,
)

# The same table is in docs/protocols/vend-board.md; change both or neither.
B = 0x1A2B3C4D  # a board boot id
GOLDEN = [
    (HelloReq(0x80000001), "a6 01 80 00 00 01 00 00 00 00 07 02 e9 c6"),
    (HelloReply(0x80000001, 2, 1024, "sv2", 41, boot=B),
     "a6 0b 80 00 00 01 1a 2b 3c 4d 86 02 04 00 00 00 00 29 03 73 76 32 39 16"),
    (StatusReq(0x80000002, boot=B), "a6 00 80 00 00 02 1a 2b 3c 4d 01 65 1b"),
    (VendReq(42, "A1", boot=B), "a6 02 00 00 00 2a 1a 2b 3c 4d 02 41 01 ca fb"),
    (VendReq(0x01020304, "Z99", boot=B), "a6 02 01 02 03 04 1a 2b 3c 4d 02 5a 63 97 68"),
    (VendResultReq(0x80000003, 42, boot=B), "a6 04 80 00 00 03 1a 2b 3c 4d 03 00 00 00 2a 05 4e"),
    (DoorUnlockReq(43, 5000, boot=B), "a6 02 00 00 00 2b 1a 2b 3c 4d 04 13 88 57 f4"),
    (DoorStateReq(0x80000004, boot=B), "a6 00 80 00 00 04 1a 2b 3c 4d 05 a8 7e"),
    (LightReq(0x80000005, True, boot=B), "a6 01 80 00 00 05 1a 2b 3c 4d 06 01 6f b8"),
    (Ack(42, boot=B), "a6 00 00 00 00 2a 1a 2b 3c 4d 80 63 4a"),
    (Nak(42, ErrorCode.BUSY, boot=B), "a6 01 00 00 00 2a 1a 2b 3c 4d 81 06 9d 7b"),
    (Nak(44, ErrorCode.STALE_BOOT, boot=0x0BADB007), "a6 01 00 00 00 2c 0b ad b0 07 81 08 25 87"),
    (StatusReply(0x80000002, "sv2", False, True, True, {"vends": 7}, boot=B),
     "a6 12 80 00 00 02 1a 2b 3c 4d 82 03 73 76 32 00 01 01 01 05 76 65 6e 64 73 00 00 00 07 89 79"),
    (VendDone(42, "A1", ErrorCode.OK, 1200, boot=B), "a6 05 00 00 00 2a 1a 2b 3c 4d 83 41 01 00 04 b0 ac 05"),
    (VendDone(42, "C3", ErrorCode.JAM, 600, boot=B), "a6 05 00 00 00 2a 1a 2b 3c 4d 83 43 03 01 02 58 e4 5e"),
    (VendDone(42, "A1", ErrorCode.OK, 1200, B, MotorCurrent(310, 540)),
     "a6 09 00 00 00 2a 1a 2b 3c 4d 83 41 01 00 04 b0 01 36 02 1c 22 fb"),
    (VendDone(42, "C3", ErrorCode.JAM, 600, B, MotorCurrent(1180, 1630)),
     "a6 09 00 00 00 2a 1a 2b 3c 4d 83 43 03 01 02 58 04 9c 06 5e 05 c1"),
    (VendResultReply(0x80000003, 42, VendState.DONE, ErrorCode.OK, "A1", 1200, boot=B),
     "a6 0a 80 00 00 03 1a 2b 3c 4d 84 00 00 00 2a 02 00 41 01 04 b0 f2 82"),
    (VendResultReply(0x80000003, 42, VendState.DONE, ErrorCode.OK, "A1", 1200, B, MotorCurrent(310, 540)),
     "a6 0e 80 00 00 03 1a 2b 3c 4d 84 00 00 00 2a 02 00 41 01 04 b0 01 36 02 1c 4f 7d"),
    (VendResultReply(0x80000003, 42, VendState.INTERRUPTED, None, None, 0, boot=0x0BADB007),
     "a6 0a 80 00 00 03 0b ad b0 07 84 00 00 00 2a 03 ff 00 00 00 00 6e b0"),
    (VendResultReply(0x80000003, 99, VendState.UNKNOWN, None, None, 0, boot=B),
     "a6 0a 80 00 00 03 1a 2b 3c 4d 84 00 00 00 63 00 ff 00 00 00 00 91 4a"),
    (DoorStateReply(0x80000004, True, False, boot=B), "a6 02 80 00 00 04 1a 2b 3c 4d 85 01 00 05 0f"),
    (DoorStateReply(0, False, False, boot=B), "a6 02 00 00 00 00 1a 2b 3c 4d 85 00 00 b0 f9"),
]
V1_STATUS_PROBE = "a5 00 80 00 00 00 01 3c e1"


def _crc_reference(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, independent of binascii, to pin the algorithm."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_crc_is_ccitt_false() -> None:
    assert codec.crc16(b"123456789") == 0x29B1 == _crc_reference(b"123456789")


@pytest.mark.parametrize(("msg", "wire"), GOLDEN, ids=[type(m).__name__ for m, _ in GOLDEN])
def test_golden_vectors(msg: codec.Frame, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert encode(msg) == raw
    assert decode(raw) == (len(raw), msg)
    assert int.from_bytes(raw[-2:], "big") == _crc_reference(raw[1:-2])


def test_all_commands_and_responses_have_a_golden_vector() -> None:
    covered = {bytes.fromhex(w)[10] for _, w in GOLDEN}
    assert covered == {int(c) for c in codec.Code}


@given(seq=st.integers(0, 0xFFFFFFFF), boot=st.integers(0, 0xFFFFFFFF), row=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
       col=st.integers(1, 99), outcome=st.integers(0, 0xFE), ms=st.integers(0, 0xFFFF),
       current=st.none() | st.builds(MotorCurrent, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)))
def test_round_trip(seq: int, boot: int, row: str, col: int, outcome: int, ms: int,
                    current: MotorCurrent | None) -> None:
    slot = f"{row}{col}"
    for msg in (VendReq(seq, slot, boot), VendDone(seq, slot, outcome, ms, boot, current), DoorUnlockReq(seq, ms, boot),
                VendResultReply(seq, seq, VendState.IN_PROGRESS, None, slot, ms, boot, current),
                HelloReply(seq, 2, ms, f"fw-{row}{col}", seq, boot)):
        raw = encode(msg)
        assert decode(raw) == (len(raw), msg)


def test_crc_mismatch_raises_protocol_error_and_says_skip_one() -> None:
    raw = bytearray(encode(VendReq(42, "A1")))
    raw[-1] ^= 0x01
    with pytest.raises(ProtocolError) as info:
        decode(raw)
    assert isinstance(info.value, FrameError) and info.value.skip == 1 and info.value.crc


def test_partial_buffer_needs_more_bytes() -> None:
    raw = encode(VendDone(42, "A1", ErrorCode.OK, 1200))
    for cut in range(len(raw)):
        assert decode(raw[:cut]) == (0, None)


def test_leading_garbage_is_dropped_up_to_the_next_sof() -> None:
    raw = encode(Ack(7))
    assert decode(b"\x00\x11\x22" + raw) == (3, None)
    assert decode(b"\x00\x11\x22") == (3, None)


def test_bad_slot_bytes_and_unknown_code_are_protocol_errors() -> None:
    bad_slot = codec._frame(5, 9, codec.Code.VEND, b"\x61\x01")  # lower-case row
    unknown = codec._frame(5, 9, 0x7E, b"")
    for raw in (bad_slot, unknown):
        with pytest.raises(ProtocolError) as info:
            decode(raw)
        assert isinstance(info.value, FrameError) and info.value.skip == len(raw)


def test_motor_current_is_an_optional_tail_of_exactly_four_bytes() -> None:
    """A board that does not measure current sends the short VEND_DONE / VEND_RESULT_REPLY (None); the
    long form adds mean and peak mA; any other length is a bad frame."""
    short = encode(VendDone(42, "A1", ErrorCode.OK, 1200, boot=B))
    long = encode(VendDone(42, "A1", ErrorCode.OK, 1200, B, MotorCurrent(310, 540)))
    assert decode(short)[1] == VendDone(42, "A1", ErrorCode.OK, 1200, B, None)
    assert len(long) == len(short) + 4
    for extra in (b"\x01", b"\x01\x36", b"\x01\x36\x02", b"\x01\x36\x02\x1c\x00"):
        for code, head in ((codec.Code.VEND_DONE, bytes.fromhex("41 01 00 04 b0")),
                           (codec.Code.VEND_RESULT_REPLY, bytes.fromhex("00 00 00 2a 02 00 41 01 04 b0"))):
            raw = codec._frame(42, B, code, head + extra)
            with pytest.raises(FrameError):
                decode(raw)
    with pytest.raises(ValueError):
        encode(VendDone(42, "A1", ErrorCode.OK, 1200, B, MotorCurrent(70000, 70000)))


def test_slot_encoding_rejects_out_of_range() -> None:
    assert codec.encode_slot("B12") == b"\x42\x0c"
    for bad in ("A0", "A100", "a1", "1A", "", "AA1", "A١"):
        with pytest.raises(ValueError):
            codec.encode_slot(bad)


def test_reader_resyncs_after_garbage_and_corrupt_frame() -> None:
    good1, good2 = encode(Ack(1)), encode(VendDone(2, "B4", ErrorCode.EMPTY, 0))
    corrupt = bytearray(encode(Ack(3)))
    corrupt[4] ^= 0xFF
    stream = b"\xff\xa6" + good1 + b"junk" + bytes(corrupt) + good2
    reader = FrameReader()
    frames = []
    for i in range(0, len(stream), 3):  # arrive in small chunks like a serial line
        frames += reader.feed(stream[i:i + 3])
    assert frames == [Ack(1), VendDone(2, "B4", ErrorCode.EMPTY, 0)]
    assert reader.crc_errors >= 2 and reader.pending == 0


def test_reader_drop_partial_releases_frames_stuck_behind_a_fake_header() -> None:
    reader = FrameReader()
    assert reader.feed(b"\xa6\x40\x00" + encode(Ack(9))) == []  # a fake SOF claims 64 bytes of payload
    assert reader.drop_partial() == [Ack(9)]


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_decode_arbitrary_bytes_raises_only_protocol_error(data: bytes) -> None:
    try:
        used, frame = decode(data)
    except ProtocolError:
        return
    assert 0 <= used <= len(data)
    assert (frame is None) or (used > 0)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_reader_never_raises_and_keeps_real_frames(chunks: list[bytes]) -> None:
    reader = FrameReader()
    for chunk in chunks:
        reader.feed(chunk)
    reader.drop_partial()
    # After any garbage and a drained partial, a clean frame still comes through intact.
    while reader.pending:
        reader.drop_partial()
    assert reader.feed(encode(Ack(77))) == [Ack(77)]


@settings(max_examples=400)
@given(seq=st.integers(0, 0xFFFFFFFF), boot=st.integers(0, 0xFFFFFFFF), code=st.integers(0, 255),
       payload=st.binary(max_size=40))
def test_valid_crc_with_random_body_raises_only_protocol_error(seq: int, boot: int, code: int, payload: bytes) -> None:
    raw = codec._frame(seq, boot, code, payload)  # right CRC, anything inside: the parser is the last guard
    try:
        used, frame = decode(raw)
    except ProtocolError as exc:
        assert isinstance(exc, FrameError) and exc.skip == len(raw)
        return
    assert used == len(raw) and frame is not None and frame.seq == seq
    assert encode(frame) == raw


def test_values_outside_the_protocol_decode_as_integers_for_the_session_to_refuse() -> None:
    """A well-formed frame carrying outcome 6 is a board fault, not line noise: it must reach the driver."""
    raw = encode(VendDone(42, "A1", 6, 1200, boot=B))
    assert decode(raw) == (len(raw), VendDone(42, "A1", 6, 1200, boot=B))
    assert 6 not in codec.OUTCOME_CODES and ErrorCode.STALE_BOOT in codec.NAK_CODES


def test_v1_probe_and_v1_frames_are_recognised() -> None:
    assert codec.encode_v1_status(0x80000000) == bytes.fromhex(V1_STATUS_PROBE)
    v1_ack = bytes.fromhex("a5 00 00 00 00 2a 80 76 b5")  # the v1 doc's ACK seq=42
    assert codec.find_v1_frame(b"noise" + v1_ack) == 42
    assert codec.find_v1_frame(encode(Ack(42, boot=B))) is None
    assert codec.find_v1_frame(v1_ack[:-1] + b"\x00") is None  # bad CRC
    reader = FrameReader()
    assert reader.feed(v1_ack) == [] and reader.garbage_bytes == len(v1_ack)  # v1 bytes are not v2 frames

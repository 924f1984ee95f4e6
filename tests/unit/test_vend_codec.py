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
    LightReq,
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
GOLDEN = [
    (StatusReq(0x80000001), "a5 00 80 00 00 01 01 0f d0"),
    (VendReq(42, "A1"), "a5 02 00 00 00 2a 02 41 01 a1 c1"),
    (VendReq(0x01020304, "Z99"), "a5 02 01 02 03 04 02 5a 63 7a 4b"),
    (VendResultReq(0x80000002, 42), "a5 04 80 00 00 02 03 00 00 00 2a 13 04"),
    (DoorUnlockReq(43, 5000), "a5 02 00 00 00 2b 04 13 88 0d a9"),
    (DoorStateReq(0x80000003), "a5 00 80 00 00 03 05 29 36"),
    (LightReq(0x80000004, True), "a5 01 80 00 00 04 06 01 fb c8"),
    (Ack(42), "a5 00 00 00 00 2a 80 76 b5"),
    (Nak(42, ErrorCode.BUSY), "a5 01 00 00 00 2a 81 06 40 c7"),
    (Nak(44, ErrorCode.BAD_SLOT), "a5 01 00 00 00 2c 81 05 c2 04"),
    (StatusReply(0x80000001, "sv1", False, True, True, {"vends": 7}),
     "a5 12 80 00 00 01 82 03 73 76 31 00 01 01 01 05 76 65 6e 64 73 00 00 00 07 55 75"),
    (VendDone(42, "A1", ErrorCode.OK, 1200), "a5 05 00 00 00 2a 83 41 01 00 04 b0 7c eb"),
    (VendDone(42, "C3", ErrorCode.JAM, 600), "a5 05 00 00 00 2a 83 43 03 01 02 58 34 b0"),
    (VendResultReply(0x80000002, 42, VendState.DONE, ErrorCode.OK, "A1", 1200),
     "a5 0a 80 00 00 02 84 00 00 00 2a 02 00 41 01 04 b0 e3 0c"),
    (VendResultReply(0x80000002, 99, VendState.UNKNOWN, None, None, 0),
     "a5 0a 80 00 00 02 84 00 00 00 63 00 ff 00 00 00 00 80 c4"),
    (DoorStateReply(0x80000003, True, False), "a5 02 80 00 00 03 85 01 00 6d 26"),
    (DoorStateReply(0, False, False), "a5 02 00 00 00 00 85 00 00 6e 32"),
]


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
    covered = {bytes.fromhex(w)[6] for _, w in GOLDEN}
    assert covered == {int(c) for c in codec.Code}


@given(seq=st.integers(0, 0xFFFFFFFF), row=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
       col=st.integers(1, 99), outcome=st.sampled_from(list(ErrorCode)), ms=st.integers(0, 0xFFFF))
def test_round_trip(seq: int, row: str, col: int, outcome: ErrorCode, ms: int) -> None:
    slot = f"{row}{col}"
    for msg in (VendReq(seq, slot), VendDone(seq, slot, outcome, ms), DoorUnlockReq(seq, ms),
                VendResultReply(seq, seq, VendState.IN_PROGRESS, None, slot, ms)):
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
    bad_slot = codec._frame(5, codec.Code.VEND, b"\x61\x01")  # lower-case row
    unknown = codec._frame(5, 0x7E, b"")
    for raw in (bad_slot, unknown):
        with pytest.raises(ProtocolError) as info:
            decode(raw)
        assert isinstance(info.value, FrameError) and info.value.skip == len(raw)


def test_slot_encoding_rejects_out_of_range() -> None:
    assert codec.encode_slot("B12") == b"\x42\x0c"
    for bad in ("A0", "A100", "a1", "1A", "", "AA1", "A١"):
        with pytest.raises(ValueError):
            codec.encode_slot(bad)


def test_reader_resyncs_after_garbage_and_corrupt_frame() -> None:
    good1, good2 = encode(Ack(1)), encode(VendDone(2, "B4", ErrorCode.EMPTY, 0))
    corrupt = bytearray(encode(Ack(3)))
    corrupt[4] ^= 0xFF
    stream = b"\xff\xa5" + good1 + b"junk" + bytes(corrupt) + good2
    reader = FrameReader()
    frames = []
    for i in range(0, len(stream), 3):  # arrive in small chunks like a serial line
        frames += reader.feed(stream[i:i + 3])
    assert frames == [Ack(1), VendDone(2, "B4", ErrorCode.EMPTY, 0)]
    assert reader.crc_errors >= 2 and reader.pending == 0


def test_reader_drop_partial_releases_frames_stuck_behind_a_fake_header() -> None:
    reader = FrameReader()
    assert reader.feed(b"\xa5\x40\x00" + encode(Ack(9))) == []  # a fake SOF claims 64 bytes of payload
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
@given(seq=st.integers(0, 0xFFFFFFFF), code=st.integers(0, 255), payload=st.binary(max_size=40))
def test_valid_crc_with_random_body_raises_only_protocol_error(seq: int, code: int, payload: bytes) -> None:
    raw = codec._frame(seq, code, payload)  # right CRC, anything inside: the parser is the last guard
    try:
        used, frame = decode(raw)
    except ProtocolError as exc:
        assert isinstance(exc, FrameError) and exc.skip == len(raw)
        return
    assert used == len(raw) and frame is not None and frame.seq == seq
    assert encode(frame) == raw

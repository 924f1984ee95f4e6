"""The adversarial board's own codec against the golden vectors of docs/protocols/vend-board.md.

The board in this package shares no code with drivers/vend_board: these vectors are the only thing
that ties the two together, so they are checked byte for byte (encode) and field by field (decode).
"""

from __future__ import annotations

import binascii

import pytest

from tests.adversarial import board as b

B = 0x1A2B3C4D
OLD = 0x0BADB007


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def vr(target: int, state: int, outcome: int, slot: str | None, ms: int) -> bytes:
    return target.to_bytes(4, "big") + bytes([state, outcome]) + b.slot_bytes(slot) + ms.to_bytes(2, "big")


GOLDEN = [  # (name, seq, boot, code, payload, doc hex)
    ("HELLO", 0x80000001, 0, b.HELLO, b"\x02", "a6 01 80 00 00 01 00 00 00 00 07 02 e9 c6"),
    (
        "HELLO_REPLY",
        0x80000001,
        B,
        b.HELLO_REPLY,
        b"\x02\x04\x00\x00\x00\x00\x29\x03sv2",
        "a6 0b 80 00 00 01 1a 2b 3c 4d 86 02 04 00 00 00 00 29 03 73 76 32 39 16",
    ),
    ("STATUS", 0x80000002, B, b.STATUS, b"", "a6 00 80 00 00 02 1a 2b 3c 4d 01 65 1b"),
    ("VEND A1", 42, B, b.VEND, b"\x41\x01", "a6 02 00 00 00 2a 1a 2b 3c 4d 02 41 01 ca fb"),
    ("VEND Z99", 0x01020304, B, b.VEND, b.slot_bytes("Z99"), "a6 02 01 02 03 04 1a 2b 3c 4d 02 5a 63 97 68"),
    (
        "VEND_RESULT",
        0x80000003,
        B,
        b.VEND_RESULT,
        (42).to_bytes(4, "big"),
        "a6 04 80 00 00 03 1a 2b 3c 4d 03 00 00 00 2a 05 4e",
    ),
    (
        "DOOR_UNLOCK",
        43,
        B,
        b.DOOR_UNLOCK,
        (5000).to_bytes(2, "big"),
        "a6 02 00 00 00 2b 1a 2b 3c 4d 04 13 88 57 f4",
    ),
    ("DOOR_STATE", 0x80000004, B, b.DOOR_STATE, b"", "a6 00 80 00 00 04 1a 2b 3c 4d 05 a8 7e"),
    ("LIGHT", 0x80000005, B, b.LIGHT, b"\x01", "a6 01 80 00 00 05 1a 2b 3c 4d 06 01 6f b8"),
    ("ACK", 42, B, b.ACK, b"", "a6 00 00 00 00 2a 1a 2b 3c 4d 80 63 4a"),
    ("NAK busy", 42, B, b.NAK, bytes([b.BUSY]), "a6 01 00 00 00 2a 1a 2b 3c 4d 81 06 9d 7b"),
    ("NAK stale_boot", 44, OLD, b.NAK, bytes([b.STALE_BOOT]), "a6 01 00 00 00 2c 0b ad b0 07 81 08 25 87"),
    (
        "STATUS_REPLY",
        0x80000002,
        B,
        b.STATUS_REPLY,
        b"\x03sv2\x00\x01\x01\x01\x05vends\x00\x00\x00\x07",
        "a6 12 80 00 00 02 1a 2b 3c 4d 82 03 73 76 32 00 01 01 01 05 76 65 6e 64 73 00 00 00 07 89 79",
    ),
    (
        "VEND_DONE ok",
        42,
        B,
        b.VEND_DONE,
        b"\x41\x01\x00\x04\xb0",
        "a6 05 00 00 00 2a 1a 2b 3c 4d 83 41 01 00 04 b0 ac 05",
    ),
    (
        "VEND_DONE jam",
        42,
        B,
        b.VEND_DONE,
        b.slot_bytes("C3") + b"\x01" + (600).to_bytes(2, "big"),
        "a6 05 00 00 00 2a 1a 2b 3c 4d 83 43 03 01 02 58 e4 5e",
    ),
    (
        "VEND_RESULT_REPLY done",
        0x80000003,
        B,
        b.VEND_RESULT_REPLY,
        vr(42, b.ST_DONE, 0, "A1", 1200),
        "a6 0a 80 00 00 03 1a 2b 3c 4d 84 00 00 00 2a 02 00 41 01 04 b0 f2 82",
    ),
    (
        "VEND_DONE ok with current",
        42,
        B,
        b.VEND_DONE,
        b"\x41\x01\x00\x04\xb0" + b.current_bytes((310, 540)),
        "a6 09 00 00 00 2a 1a 2b 3c 4d 83 41 01 00 04 b0 01 36 02 1c 22 fb",
    ),
    (
        "VEND_DONE jam with current",
        42,
        B,
        b.VEND_DONE,
        b.slot_bytes("C3") + b"\x01" + (600).to_bytes(2, "big") + b.current_bytes((1180, 1630)),
        "a6 09 00 00 00 2a 1a 2b 3c 4d 83 43 03 01 02 58 04 9c 06 5e 05 c1",
    ),
    (
        "VEND_RESULT_REPLY done with current",
        0x80000003,
        B,
        b.VEND_RESULT_REPLY,
        vr(42, b.ST_DONE, 0, "A1", 1200) + b.current_bytes((310, 540)),
        "a6 0e 80 00 00 03 1a 2b 3c 4d 84 00 00 00 2a 02 00 41 01 04 b0 01 36 02 1c 4f 7d",
    ),
    (
        "VEND_RESULT_REPLY interrupted",
        0x80000003,
        OLD,
        b.VEND_RESULT_REPLY,
        vr(42, b.ST_INTERRUPTED, b.NO_OUTCOME, None, 0),
        "a6 0a 80 00 00 03 0b ad b0 07 84 00 00 00 2a 03 ff 00 00 00 00 6e b0",
    ),
    (
        "VEND_RESULT_REPLY unknown",
        0x80000003,
        B,
        b.VEND_RESULT_REPLY,
        vr(99, b.ST_UNKNOWN, b.NO_OUTCOME, None, 0),
        "a6 0a 80 00 00 03 1a 2b 3c 4d 84 00 00 00 63 00 ff 00 00 00 00 91 4a",
    ),
    (
        "DOOR_STATE_REPLY",
        0x80000004,
        B,
        b.DOOR_STATE_REPLY,
        b"\x01\x00",
        "a6 02 80 00 00 04 1a 2b 3c 4d 85 01 00 05 0f",
    ),
    (
        "DOOR_STATE event",
        0,
        B,
        b.DOOR_STATE_REPLY,
        b"\x00\x00",
        "a6 02 00 00 00 00 1a 2b 3c 4d 85 00 00 b0 f9",
    ),
]


def test_crc_check_value_bitwise_equals_crc_hqx() -> None:
    assert b.crc16(b"123456789") == 0x29B1
    for data in (b"", b"\x00", b"\xff" * 7, bytes(range(200))):
        assert b.crc16(data) == binascii.crc_hqx(data, 0xFFFF)


@pytest.mark.parametrize("name,seq,boot,code,payload,wire", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(name: str, seq: int, boot: int, code: int, payload: bytes, wire: str) -> None:
    assert b.encode(seq, boot, code, payload) == h(wire)
    used, frame = b.decode(h(wire))
    assert used == len(h(wire))
    assert frame == b.Frame(seq, boot, code, payload)


def test_v1_status_probe() -> None:
    assert b.encode_v1(0x80000000, b.STATUS) == h("a5 00 80 00 00 00 01 3c e1")


def test_slot_bytes() -> None:
    assert (
        b.slot_bytes("A1") == h("41 01")
        and b.slot_bytes("Z99") == h("5a 63")
        and b.slot_bytes(None) == h("00 00")
    )
    assert b.slot_str(h("5a 63")) == "Z99" and b.slot_str(h("00 00")) is None
    with pytest.raises(ValueError):
        b.slot_str(h("41 00"))


def test_decode_resyncs_past_noise_bad_crc_and_partial_frames() -> None:
    ack = h("a6 00 00 00 00 2a 1a 2b 3c 4d 80 63 4a")
    assert b.decode(b"") == (0, None)
    assert b.decode(ack[:5]) == (0, None)  # need more
    assert b.decode(b"\x01\x02" + ack) == (2, None)  # garbage before SOF
    bad = bytearray(ack)
    bad[-1] ^= 1
    assert b.decode(bytes(bad)) == (1, None)  # bad CRC: drop the SOF only
    assert b.decode(b"\xa6\x81" + ack) == (1, None)  # LEN > 128: impossible
    # a stray SOF that claims a short payload swallows the real frame's first bytes: after its CRC fails
    # only that SOF goes and the real frame is found
    buf = b"\xa6\x00" + ack
    used, frame = b.decode(buf)
    assert (used, frame) == (1, None)
    rest = buf[used:]
    used, frame = b.decode(rest)
    assert frame is None and rest[used:] == ack
    assert b.decode(ack)[1] == b.Frame(42, B, b.ACK, b"")

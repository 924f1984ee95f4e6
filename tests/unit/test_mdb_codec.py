"""MDB cashless codec over the Qibixx adapter's line protocol: golden lines and bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.mdb import codec
from drivers.mdb.codec import (
    BeginSession,
    Malfunction,
    OutOfSequence,
    PeripheralId,
    PeripheralReply,
    ReaderConfig,
    Resp,
    Simple,
    VendApproved,
)


@pytest.mark.parametrize(
    "command, line",
    [
        (codec.reset(), b"R,10\n"),
        (codec.poll(), b"R,12\n"),
        (codec.setup_config(3), b"R,11,0003000000\n"),
        (codec.setup_prices(0xFFFE, 0), b"R,11,01FFFE0000\n"),
        (codec.vend_request(150, 103), b"R,13,0000960067\n"),
        (codec.vend_cancel(), b"R,13,01\n"),
        (codec.vend_success(103), b"R,13,020067\n"),
        (codec.vend_failure(), b"R,13,03\n"),
        (codec.session_complete(), b"R,13,04\n"),
        (codec.cash_sale(200, 506), b"R,13,0500C801FA\n"),
        (codec.reader_enable(), b"R,14,01\n"),
        (codec.expansion_enable_features(codec.FEATURE_ALWAYS_IDLE), b"R,17,0400000020\n"),
    ],
)
def test_command_lines_are_golden(command, line):
    assert codec.encode_command(command) == line
    assert codec.decode_command(line.decode().strip()) == command


def test_expansion_request_id_pads_fields_to_their_widths():
    line = codec.encode_command(codec.expansion_request_id("VED", "1", "vendedge", 1))
    data = bytes.fromhex(line.decode().strip().split(",")[2])
    assert len(data) == 1 + 3 + 12 + 12 + 2
    assert data[1:4] == b"VED" and data[4:16] == b"1" + b" " * 11 and data[-2:] == b"\x00\x01"


@pytest.mark.parametrize(
    "line, reply",
    [
        ("p,ACK", PeripheralReply(ack=True)),
        ("p,NACK", PeripheralReply(nack=True)),
        ("p,0500C8", PeripheralReply(data=b"\x05\x00\xc8")),
    ],
)
def test_peripheral_replies(line, reply):
    assert codec.decode_line(line) == reply
    assert codec.encode_reply(reply) == (line + "\n").encode()


@pytest.mark.parametrize("bad", ["p,0G", "p,", "junk", ",x"])
def test_bad_lines_raise_protocol_error(bad):
    with pytest.raises(ProtocolError):
        codec.decode_line(bad)


def test_other_adapter_lines_are_passed_through():
    assert codec.decode_line("v,4.2.1") == codec.AdapterLine("v", ("4.2.1",))


def test_level1_responses_decode_from_golden_bytes():
    data = bytes.fromhex("000103197801020A000300640500C806070A030B")
    assert codec.decode_responses(data, 1) == [
        Simple(Resp.JUST_RESET),
        ReaderConfig(3, 0x1978, 1, 2, 10, 0),
        BeginSession(100),
        VendApproved(200),
        Simple(Resp.VEND_DENIED),
        Simple(Resp.END_SESSION),
        Malfunction(3),
        OutOfSequence(),
    ]


def test_level3_begin_session_and_peripheral_id_are_longer():
    pid = PeripheralId("ABC", "123456789012", "model-x", 0x0102, codec.FEATURE_ALWAYS_IDLE)
    raw = codec.encode_response(pid, 3)
    assert len(raw) == 34
    assert codec.decode_responses(raw, 3) == [pid] and pid.always_idle
    assert codec.decode_responses(codec.encode_response(pid, 1), 1)[0].features == 0
    begin = codec.encode_response(BeginSession(500), 3)
    assert len(begin) == 10 and codec.decode_responses(begin, 3) == [BeginSession(500)]


@pytest.mark.parametrize("data", [b"\x05\x00", b"\x0c", b"\x01\x01"])
def test_truncated_or_unknown_responses_raise(data):
    with pytest.raises(ProtocolError):
        codec.decode_responses(data, 1)


@pytest.mark.parametrize(
    "minor, digits, scale, decimals, scaled",
    [(180, 2, 1, 2, 180), (180, 2, 5, 2, 36), (150, 2, 1, 1, 15), (300, 0, 10, 0, 30), (250, 2, 50, 2, 5)],
)
def test_money_scaling_round_trips(minor, digits, scale, decimals, scaled):
    assert codec.to_scaled(minor, digits, scale, decimals) == scaled
    assert codec.from_scaled(scaled, digits, scale, decimals) == minor


@pytest.mark.parametrize("minor, scale, decimals", [(183, 5, 2), (155, 1, 1), (70000, 1, 2)])
def test_amounts_the_reader_cannot_say_are_refused(minor, scale, decimals):
    with pytest.raises(ValueError):
        codec.to_scaled(minor, 2, scale, decimals)


def test_line_reader_splits_strips_cr_and_counts_noise():
    reader = codec.LineReader()
    assert reader.feed(b"p,AC") == []
    assert reader.feed(b"K\r\np,0B\n\xff\xfe\n") == ["p,ACK", "p,0B"]
    assert reader.garbage_bytes == 3
    reader.feed(b"x" * (codec.MAX_LINE + 1))
    assert reader.garbage_bytes == 3 + codec.MAX_LINE + 1


@given(st.binary(max_size=64))
def test_decode_responses_raises_only_protocol_error(data):
    try:
        codec.decode_responses(data, 3)
    except ProtocolError:
        pass


@given(st.text(max_size=80))
def test_decode_line_raises_only_protocol_error(text):
    try:
        codec.decode_line(text)
    except ProtocolError:
        pass

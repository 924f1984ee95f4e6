"""Wire shapes of the sync protocol: what the cloud accepts, acks and refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.core.ports import OutboxRecord
from sync import protocol

ORDER = OutboxRecord(record_id="r-1", seq=1, kind="order", created_at="2024-05-01T10:00:00Z",
                     payload={"order_id": "o-1", "lines": [{"sku_id": "cola", "qty": 2, "unit_price": 180}],
                              "total": 360, "currency": "EUR"}, priority=0)


def wire(record: OutboxRecord, **change: object) -> dict:
    return dict(protocol.record_to_wire(record), **change)


def test_push_body_round_trips() -> None:
    body = protocol.encode_push([ORDER])
    raw = protocol.parse_push(json.loads(body))
    assert [protocol.parse_record(r) for r in raw] == [ORDER]


@pytest.mark.parametrize("change,reason", [
    ({"kind": "gossip"}, "unknown_kind"),
    ({"created_at": "yesterday"}, "bad_field: created_at"),
    ({"seq": True}, "bad_field: seq"),
    ({"record_id": ""}, "bad_field: record_id"),
    ({"payload": {"order_id": "o", "lines": [], "total": 3.6}}, "bad_money"),
    ({"payload": {"order_id": "o", "lines": [{"sku_id": "x", "qty": 1, "unit_price": 1.8}],
                  "total": 180}}, "bad_money"),
    ({"kind": "alarm", "payload": {"code": "door_open", "state": "maybe"}}, "bad_field: state"),
    ({"kind": "stock", "payload": {"levels": {"A1": -1}}}, "bad_field: levels.A1"),
])
def test_invalid_records_are_refused_with_a_reason(change: dict, reason: str) -> None:
    with pytest.raises(protocol.ProtocolInvalid) as exc:
        protocol.parse_record(wire(ORDER, **change))
    assert exc.value.reason.startswith(reason)


def test_unaggregated_kinds_accept_any_object_payload() -> None:
    rec = protocol.parse_record(wire(ORDER, kind="telemetry", priority=5, payload={"t_c": 4.2}))
    assert rec.kind == "telemetry" and rec.payload == {"t_c": 4.2}


def test_push_envelope_is_checked() -> None:
    for bad in ({}, [], {"records": {}}, {"records": [{}] * (protocol.MAX_RECORDS_PER_PUSH + 1)}):
        with pytest.raises(protocol.ProtocolInvalid):
            protocol.parse_push(bad)
    assert protocol.record_id_of({"record_id": "x"}) == "x"
    assert protocol.record_id_of(["x"]) is None


def test_acks_commands_and_config_answers_are_validated() -> None:
    acks = protocol.parse_acks({"acks": [{"record_id": "a", "status": "stored"},
                                         {"record_id": "b", "status": "invalid", "reason": "bad_money"}]})
    assert [(a.record_id, a.status, a.reason) for a in acks] == [("a", "stored", None),
                                                                 ("b", "invalid", "bad_money")]
    with pytest.raises(protocol.ProtocolInvalid):
        protocol.parse_acks({"acks": [{"record_id": "a", "status": "maybe"}]})
    with pytest.raises(protocol.ProtocolInvalid):
        protocol.parse_commands({"commands": [{"command_id": "c", "name": "vend"}]})
    assert protocol.parse_config({"version": 3, "doc": {"skus": []}}) == (3, {"skus": []})
    with pytest.raises(protocol.ProtocolInvalid):
        protocol.parse_config({"version": "3", "doc": {}})


def test_etag_round_trip() -> None:
    assert protocol.etag(7) == '"7"'
    assert protocol.parse_etag('"7"') == 7
    assert protocol.parse_etag('W/"7"') == 7
    assert protocol.parse_etag(None) is None
    assert protocol.parse_etag('"abc"') is None


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                max_size=3),
                           max_leaves=10)


@given(seq=st.integers(min_value=0, max_value=2**62), payload=st.dictionaries(st.text(max_size=8),
                                                                               json_values, max_size=4),
       kind=st.sampled_from(["telemetry", "event", "audit", "command_result"]))
def test_any_valid_record_survives_the_wire(seq: int, payload: dict, kind: str) -> None:
    rec = OutboxRecord(record_id=f"r-{seq}", seq=seq, kind=kind, created_at="2024-05-01T10:00:00.5+02:00",
                       payload=payload, priority=3)
    raw = protocol.parse_push(json.loads(protocol.encode_push([rec])))
    assert protocol.parse_record(raw[0]) == rec

"""Wire shapes of the /v1 sync protocol and their validation (see docs/protocols/sync.md and
sync/openapi.yaml). Pure functions: both the client and the reference cloud use them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.core.wire import PRIORITY, OutboxRecord

API_PREFIX = "/v1"
KINDS = frozenset(PRIORITY)
ACK_STATUSES = frozenset({"stored", "duplicate", "invalid"})
RESULT_STATUSES = frozenset({"ok", "rejected", "failed", "duplicate"})
MAX_RECORDS_PER_PUSH = 5_000
MAX_POLL_WAIT_S = 60
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class ProtocolInvalid(ValueError):
    """A message does not follow the protocol; `reason` is a short snake_case code + detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Ack:
    """The cloud's answer for one pushed record."""

    record_id: str
    status: str
    reason: str | None = None


def machine_path(machine_id: str, tail: str) -> str:
    """`/v1/machines/{id}/{tail}`."""
    return f"{API_PREFIX}/machines/{machine_id}/{tail}"


def record_to_wire(record: OutboxRecord) -> dict[str, Any]:
    """One outbox record as its JSON object."""
    return {"record_id": record.record_id, "seq": record.seq, "kind": record.kind,
            "created_at": record.created_at, "priority": record.priority,
            "payload": dict(record.payload)}


def encode_push(records: list[OutboxRecord]) -> bytes:
    """The push request body (uncompressed, compact JSON)."""
    return json.dumps({"records": [record_to_wire(r) for r in records]},
                      separators=(",", ":"), ensure_ascii=False).encode()


def _need(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    value = d.get(key)
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ProtocolInvalid(f"bad_field: {key}")
    return value


def _is_money(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_order(payload: Mapping[str, Any]) -> None:
    _need(payload, "order_id", str)
    lines = _need(payload, "lines", list)
    for i, line in enumerate(lines):
        if not isinstance(line, Mapping) or not isinstance(line.get("sku_id"), str):
            raise ProtocolInvalid(f"bad_field: lines[{i}].sku_id")
        if not isinstance(line.get("qty"), int) or line["qty"] < 1:
            raise ProtocolInvalid(f"bad_field: lines[{i}].qty")
        if not _is_money(line.get("unit_price")):
            raise ProtocolInvalid(f"bad_money: lines[{i}].unit_price must be integer minor units")
    if not _is_money(payload.get("total")):
        raise ProtocolInvalid("bad_money: total must be integer minor units")


def _check_alarm(payload: Mapping[str, Any]) -> None:
    _need(payload, "code", str)
    if payload.get("state") not in ("raised", "cleared"):
        raise ProtocolInvalid("bad_field: state must be raised|cleared")


def _check_stock(payload: Mapping[str, Any]) -> None:
    levels = _need(payload, "levels", Mapping)
    for slot_id, qty in levels.items():
        if not isinstance(qty, int) or isinstance(qty, bool) or qty < 0:
            raise ProtocolInvalid(f"bad_field: levels.{slot_id}")


_PAYLOAD_CHECKS = {"order": _check_order, "alarm": _check_alarm, "stock": _check_stock}


def parse_record(obj: Any) -> OutboxRecord:
    """Validate one pushed record (envelope + the payload of kinds the cloud aggregates)."""
    if not isinstance(obj, Mapping):
        raise ProtocolInvalid("bad_record: not an object")
    record_id = _need(obj, "record_id", str)
    if not ID_RE.match(record_id):
        raise ProtocolInvalid("bad_field: record_id")
    kind = _need(obj, "kind", str)
    if kind not in KINDS:
        raise ProtocolInvalid(f"unknown_kind: {kind}")
    created_at = _need(obj, "created_at", str)
    if not ISO_RE.match(created_at):
        raise ProtocolInvalid("bad_field: created_at must be ISO-8601 with offset")
    payload = _need(obj, "payload", Mapping)
    check = _PAYLOAD_CHECKS.get(kind)
    if check is not None:
        check(payload)
    return OutboxRecord(record_id=record_id, seq=_need(obj, "seq", int), kind=kind,
                        created_at=created_at, payload=payload,
                        priority=_need(obj, "priority", int))


def parse_push(doc: Any) -> list[Any]:
    """The raw record objects of a push body; the envelope itself must be right (else 400)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("records"), list):
        raise ProtocolInvalid("bad_request: body must be {\"records\": [...]}")
    records: list[Any] = doc["records"]
    if len(records) > MAX_RECORDS_PER_PUSH:
        raise ProtocolInvalid(f"too_many_records: max {MAX_RECORDS_PER_PUSH}")
    return records


def record_id_of(obj: Any) -> str | None:
    """Best-effort id of a (possibly invalid) record, so it can still be acked as invalid."""
    value = obj.get("record_id") if isinstance(obj, Mapping) else None
    return value if isinstance(value, str) else None


def parse_acks(doc: Any) -> list[Ack]:
    """The client's reading of a push answer."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("acks"), list):
        raise ProtocolInvalid("bad_response: acks missing")
    acks = []
    for a in doc["acks"]:
        if not isinstance(a, Mapping) or a.get("status") not in ACK_STATUSES:
            raise ProtocolInvalid("bad_response: ack status")
        acks.append(Ack(_need(a, "record_id", str), a["status"], a.get("reason")))
    return acks


def parse_config(doc: Any) -> tuple[int, dict[str, Any]]:
    """`{version, doc}` → (version, doc). The doc itself is validated by the ConfigSink."""
    if not isinstance(doc, Mapping):
        raise ProtocolInvalid("bad_response: config not an object")
    version = _need(doc, "version", int)
    body = _need(doc, "doc", Mapping)
    return version, dict(body)


def parse_commands(doc: Any) -> list[dict[str, Any]]:
    """The raw command objects of a poll answer (signatures are checked separately)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("commands"), list):
        raise ProtocolInvalid("bad_response: commands missing")
    out = []
    for c in doc["commands"]:
        if not isinstance(c, Mapping):
            raise ProtocolInvalid("bad_response: command not an object")
        _need(c, "command_id", str)
        _need(c, "name", str)
        _need(c, "args", Mapping)
        _need(c, "issued_at", str)
        out.append(dict(c))
    return out


def etag(version: int) -> str:
    """The quoted ETag for a config version."""
    return f'"{version}"'


def parse_etag(value: str | None) -> int | None:
    """The version inside an If-None-Match header, or None when absent/unreadable."""
    if not value:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else None

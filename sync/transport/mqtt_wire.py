"""Topics, payloads and credentials of the MQTT 5 binding (docs/protocols/mqtt.md). Pure: both the
machine's transport and the cloud's ingest worker use it.

Per machine, under `{prefix}/m/{machine_id}/`:
`outbox` (machine → cloud, QoS 1), `ack` (cloud → machine, QoS 1), `config` (cloud → machine,
QoS 1, retained), `cmd` (cloud → machine, QoS 1, signed), `result` (machine → cloud, QoS 1),
`status` (machine → cloud, QoS 1, retained; the Last Will says offline).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from edge.core.wire import OutboxRecord
from sync import protocol

DEFAULT_PREFIX = "vendedge"
PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
MACHINE_TO_CLOUD = ("outbox", "result", "status")
CLOUD_TO_MACHINE = ("ack", "config", "cmd")
SHARE_GROUP = "vendedge-ingest"
CLOUD_USER = "refcloud"
PASSWORD_CONTEXT = b"vendedge-mqtt-password-v1"
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes; the broker re-hashes on every CONNECT


class WireInvalid(ValueError):
    """An MQTT message that does not follow docs/protocols/mqtt.md."""


def topic(prefix: str, machine_id: str, leaf: str) -> str:
    """`{prefix}/m/{machine_id}/{leaf}`."""
    return f"{prefix}/m/{machine_id}/{leaf}"


def shared_filter(prefix: str, leaf: str, group: str = SHARE_GROUP) -> str:
    """The cloud workers' shared subscription for one machine→cloud leaf."""
    return f"$share/{group}/{prefix}/m/+/{leaf}"


def split_topic(prefix: str, name: str) -> tuple[str, str]:
    """`{prefix}/m/{id}/{leaf}` → (id, leaf); anything else is WireInvalid."""
    head = f"{prefix}/m/"
    if not name.startswith(head):
        raise WireInvalid(f"bad_topic: {name}")
    machine_id, _, leaf = name[len(head) :].partition("/")
    if not protocol.ID_RE.match(machine_id) or "/" in leaf or not leaf:
        raise WireInvalid(f"bad_topic: {name}")
    return machine_id, leaf


def broker_address(url: str) -> tuple[str, int, bool]:
    """`mqtt://host[:1883]` or `mqtts://host[:8883]` → (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


# credentials -----------------------------------------------------------------------------------
def machine_password(secret: bytes) -> str:
    """The machine's broker password, derived from its sync secret (nothing new to provision):
    hex HMAC-SHA256(secret, "vendedge-mqtt-password-v1")."""
    return hmac.new(secret, PASSWORD_CONTEXT, hashlib.sha256).hexdigest()


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2.x password-file hash: `$7$iter$b64(salt)$b64(PBKDF2-SHA512)`, as
    `mosquitto_passwd` writes it."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_text(prefix: str, cloud_user: str = CLOUD_USER) -> str:
    """The Mosquitto ACL: the cloud user may touch every machine's topics; every other user only
    its own (`%u` = its username = its machine id), and only in the direction the protocol uses."""
    own = f"{prefix}/m/%u"
    lines = [
        "# written by `vendedge refcloud mqtt-acl`: see docs/protocols/mqtt.md",
        f"user {cloud_user}",
        f"topic readwrite {prefix}/m/#",
        "",
        "# every machine: its own topics only",
        *(f"pattern write {own}/{leaf}" for leaf in MACHINE_TO_CLOUD),
        *(f"pattern read {own}/{leaf}" for leaf in CLOUD_TO_MACHINE),
    ]
    return "\n".join(lines) + "\n"


# payloads --------------------------------------------------------------------------------------
def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON, as every message of the binding is."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(payload: bytes | bytearray | str) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WireInvalid(f"bad_json: {exc}") from exc


def encode_batch(batch_id: str, records: Sequence[OutboxRecord], backlog: int) -> bytes:
    """The outbox message: one batch with an id the ack echoes."""
    return dumps(
        {"batch_id": batch_id, "backlog": backlog, "records": [protocol.record_to_wire(r) for r in records]}
    )


def decode_batch(payload: bytes) -> tuple[str, int | None, list[Any]]:
    """(batch_id, backlog, raw records) of an outbox message; the records are checked one by one later."""
    doc = _loads(payload)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("batch_id"), str):
        raise WireInvalid("bad_request: batch_id missing")
    if not protocol.ID_RE.match(doc["batch_id"]):
        raise WireInvalid("bad_field: batch_id")
    try:
        records = protocol.parse_push(doc)
    except protocol.ProtocolInvalid as exc:
        raise WireInvalid(exc.reason) from exc
    backlog = doc.get("backlog")
    ok = isinstance(backlog, int) and not isinstance(backlog, bool) and 0 <= backlog < 10**18
    return doc["batch_id"], backlog if ok else None, records


def encode_acks(batch_id: str, acks: Sequence[Mapping[str, Any]], server_time: int) -> bytes:
    return dumps({"batch_id": batch_id, "acks": list(acks), "server_time": server_time})


def decode_acks(payload: bytes) -> tuple[str, list[protocol.Ack], int | None]:
    doc = _loads(payload)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("batch_id"), str):
        raise WireInvalid("bad_response: batch_id missing")
    try:
        acks = protocol.parse_acks(doc)
    except protocol.ProtocolInvalid as exc:
        raise WireInvalid(exc.reason) from exc
    server_time = doc.get("server_time")
    return doc["batch_id"], acks, server_time if isinstance(server_time, int) else None


def encode_config(version: int, doc: Mapping[str, Any]) -> bytes:
    return dumps({"version": version, "doc": dict(doc)})


def decode_config(payload: bytes) -> tuple[int, dict[str, Any]]:
    try:
        return protocol.parse_config(_loads(payload))
    except protocol.ProtocolInvalid as exc:
        raise WireInvalid(exc.reason) from exc


def decode_command(payload: bytes) -> dict[str, Any]:
    """One signed command (the same object as in the HTTPS poll answer; signature checked later)."""
    try:
        return protocol.parse_commands({"commands": [_loads(payload)]})[0]
    except protocol.ProtocolInvalid as exc:
        raise WireInvalid(exc.reason) from exc


def encode_result(command_id: str, status: str, detail: Mapping[str, Any]) -> bytes:
    return dumps({"command_id": command_id, "status": status, "detail": dict(detail)})


def decode_result(payload: bytes) -> tuple[str, str, dict[str, Any]]:
    doc = _loads(payload)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("command_id"), str):
        raise WireInvalid("bad_request: command_id missing")
    if doc.get("status") not in protocol.RESULT_STATUSES:
        raise WireInvalid("bad_request: status must be one of ok|rejected|failed|duplicate")
    detail = doc.get("detail")
    return doc["command_id"], doc["status"], dict(detail) if isinstance(detail, Mapping) else {}


def encode_status(state: str, *, config_version: int | None = None, backlog: int | None = None) -> bytes:
    """Birth (`online`, with what the machine has) or `offline` (Last Will / clean stop)."""
    doc: dict[str, Any] = {"state": state}
    if config_version is not None:
        doc["config_version"] = config_version
    if backlog is not None:
        doc["backlog"] = backlog
    return dumps(doc)


def decode_status(payload: bytes) -> tuple[str, int | None, int | None]:
    """(state, config_version, backlog); an empty payload (a cleared retained message) is offline."""
    if not payload:
        return "offline", None, None
    doc = _loads(payload)
    if not isinstance(doc, Mapping) or doc.get("state") not in ("online", "offline"):
        raise WireInvalid("bad_status: state must be online|offline")

    def num(key: str) -> int | None:
        v = doc.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else None

    return doc["state"], num("config_version"), num("backlog")

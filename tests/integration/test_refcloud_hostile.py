"""Hostile raw requests against a live reference cloud on loopback: every one is answered with a
clear 4xx (never a 500) and stores nothing. Requests are written byte by byte on a socket, so
headers no HTTP client would send (non-UTF-8, superscript digits) reach the server as-is."""

from __future__ import annotations

import asyncio
import gzip
import json
import pathlib
import time
from collections.abc import AsyncIterator

import pytest

from sync import signing
from sync.refcloud import serve
from sync.refcloud.app import MAX_BODY_BYTES

TOKEN = "admin-token-for-tests"
pytestmark = pytest.mark.timeout(30)
OUTBOX = "/v1/machines/m1/outbox"


class Raw:
    def __init__(self, port: int, secret: bytes) -> None:
        self.port, self.secret = port, secret

    async def send(self, method: str, path: str, headers: dict[str, str | bytes],
                   body: bytes = b"") -> tuple[int, dict]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close",
                f"Content-Length: {len(body)}".encode()]
        head += [k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        data = await reader.read()
        writer.close()
        status_line, _, rest = data.partition(b"\r\n")
        payload = rest.partition(b"\r\n\r\n")[2]
        try:
            doc = json.loads(payload) if payload else {}
        except ValueError:
            doc = {"raw": payload.decode(errors="replace")}
        return int(status_line.split()[1]), doc

    def signed_headers(self, method: str, path: str, body: bytes) -> dict[str, str | bytes]:
        return dict(signing.request_headers("m1", self.secret, method, path, body, now=time.time()))

    async def signed(self, method: str, path: str, body: bytes = b"",
                     extra: dict[str, str | bytes] | None = None) -> tuple[int, dict]:
        headers = self.signed_headers(method, path, body)
        headers.update(extra or {})
        if body:
            headers["Content-Type"] = "application/json"
        return await self.send(method, path, headers, body)

    async def admin(self, method: str, path: str, body: object) -> tuple[int, dict]:
        data = json.dumps(body).encode()
        return await self.send(method, path, {"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"}, data)


@pytest.fixture
async def raw(tmp_path: pathlib.Path) -> AsyncIterator[Raw]:
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN)
    try:
        r = Raw(runner.addresses[0][1], b"")
        status, doc = await r.admin("POST", "/admin/machines", {"machine_id": "m1"})
        assert status == 201
        r.secret = bytes.fromhex(doc["secret_hex"])
        yield r
    finally:
        await runner.cleanup()


def record(seq: int = 1, **over: object) -> dict:
    rec = {"record_id": f"r-{seq % 1000}", "seq": seq, "kind": "order",
           "created_at": "2026-01-01T00:00:00Z", "priority": 0,
           "payload": {"order_id": "o", "lines": [{"sku_id": "a", "qty": 1, "unit_price": 1}],
                       "total": 1}}
    rec.update(over)
    return rec


async def stored(raw: Raw) -> int:
    status, doc = await raw.admin("GET", "/admin/machines/m1/records", None)
    assert status == 200
    return doc["total"]


async def test_hostile_headers_before_any_valid_signature_are_401_or_400(raw: Raw) -> None:
    body = json.dumps({"records": [record()]}).encode()
    good = raw.signed_headers("POST", OUTBOX, body)
    probes = {
        "superscript timestamp": dict(good, **{"X-Timestamp": "²".encode()}),
        "5000-digit timestamp": dict(good, **{"X-Timestamp": "9" * 5000}),
        "negative timestamp": dict(good, **{"X-Timestamp": "-1"}),
    }
    for name, headers in probes.items():
        status, doc = await raw.send("POST", OUTBOX, headers, body)
        assert (status, doc.get("error")) == (401, "missing_auth_headers"), name
    # non-UTF-8 admin Bearer token: refused like any wrong token
    status, doc = await raw.send("GET", "/admin/machines", {"Authorization": b"Bearer \xff\xfe\xfd-token"})
    assert (status, doc) == (401, {"error": "unauthorized"})
    assert await stored(raw) == 0


async def test_corrupt_or_oversized_bodies_are_4xx_and_store_nothing(raw: Raw) -> None:
    corrupt = b"\x1f\x8b\x08\x00" + b"not really gzip" * 10
    headers = raw.signed_headers("POST", OUTBOX, b'{"records": []}')
    status, doc = await raw.send("POST", OUTBOX, dict(headers, **{"Content-Encoding": "gzip"}), corrupt)
    assert (status, doc.get("error")) == (400, "bad_body")
    # a gzip bomb: 40 kB on the wire, more than MAX_BODY_BYTES once inflated — refused, not inflated whole
    bomb = gzip.compress(b" " * (MAX_BODY_BYTES + 1024), 9)
    assert len(bomb) < 100_000
    headers = raw.signed_headers("POST", OUTBOX, b"")
    status, doc = await raw.send("POST", OUTBOX, dict(headers, **{"Content-Encoding": "gzip"}), bomb)
    assert (status, doc.get("error")) == (413, "body_too_large")
    assert await stored(raw) == 0


async def test_hostile_signed_requests_are_400_or_acked_invalid(raw: Raw) -> None:
    push = json.dumps({"records": [record()]}).encode()
    for backlog in ("²", "1" + "0" * 40, "-3", "12abc"):
        status, doc = await raw.signed("POST", OUTBOX, push, {"X-Backlog": backlog.encode()})
        assert (status, doc.get("error")) == (400, "bad_request"), (backlog, doc)
    deep = b"[" * 100_000 + b"]" * 100_000
    status, doc = await raw.signed("POST", OUTBOX, deep)
    assert (status, doc.get("error"), doc.get("reason")) == (400, "bad_json", "nested too deep")
    result = "/v1/machines/m1/commands/abc/result"
    for bad in ({"status": ["ok"]}, {"status": {"a": 1}}, {"status": None}, []):
        status, doc = await raw.signed("POST", result, json.dumps(bad).encode())
        assert (status, doc.get("error")) == (400, "bad_request"), bad
    for wait in ("%C2%B2", "9" * 5000, "x"):  # %C2%B2 is "²"
        status, doc = await raw.signed("GET", f"/v1/machines/m1/commands?wait={wait}")
        assert (status, doc.get("error")) == (400, "bad_request"), wait
    huge = 10**30
    records = [record(2**63, record_id="r-seq63"), record(huge, record_id="r-seq30"),
               record(1, record_id="r-prio", priority=huge),
               record(1, record_id="r-stock", kind="stock", payload={"levels": {"A1": huge}}),
               record(1, record_id="r-total", payload={"order_id": "o", "lines": [], "total": huge})]
    status, doc = await raw.signed("POST", OUTBOX, json.dumps({"records": records}).encode())
    assert status == 200
    assert [(a["record_id"], a["status"]) for a in doc["acks"]] == [
        (r["record_id"], "invalid") for r in records]
    assert {a["reason"] for a in doc["acks"]} == {"bad_number: integers must fit 64 bits"}
    # the largest 64-bit seq still fits and is stored
    status, doc = await raw.signed("POST", OUTBOX, json.dumps({"records": [record(2**63 - 1)]}).encode())
    assert doc["acks"][0]["status"] == "stored"
    assert await stored(raw) == 1


async def test_unsupported_methods_are_405_before_authentication(raw: Raw) -> None:
    for method, path in (("DELETE", OUTBOX), ("PUT", "/v1/machines/m1/commands"),
                         ("PATCH", "/v1/machines/m1/config"), ("DELETE", "/admin/machines")):
        status, _ = await raw.send(method, path, {})
        assert status == 405, (method, path)
    status, _ = await raw.send("GET", "/v1/machines/m1/nothing-here", {})
    assert status == 404


async def test_admin_bad_numbers_and_deep_json_are_400(raw: Raw) -> None:
    status, doc = await raw.admin("POST", "/admin/machines/m1/commands", {"name": "x", "ttl_s": 1e308})
    assert (status, doc.get("error")) == (400, "bad_request")
    status, doc = await raw.send("POST", "/admin/machines", {"Authorization": f"Bearer {TOKEN}"},
                                 b"[" * 100_000)
    assert (status, doc.get("error")) == (400, "bad_json")

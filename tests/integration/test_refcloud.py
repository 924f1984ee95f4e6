"""The reference cloud over real loopback HTTP and a real SQLite file: authentication, idempotent
ingest, views, admin API, commands and the fleet page."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sync import signing
from sync.refcloud import serve

TOKEN = "admin-token-for-tests"
ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = json.loads((ROOT / "hw_sim/data/demo_planogram.json").read_text())
pytestmark = pytest.mark.timeout(30)


class Cloud:
    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base, self.http = base, http
        self.admin_headers = {"Authorization": f"Bearer {TOKEN}"}

    async def admin(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        async with self.http.request(method, self.base + path, json=body,
                                     headers=self.admin_headers) as r:
            return r.status, await r.json()

    async def register(self, machine_id: str) -> bytes:
        status, doc = await self.admin("POST", "/admin/machines", {"machine_id": machine_id})
        assert status == 201
        return bytes.fromhex(doc["secret_hex"])

    async def signed(self, machine_id: str, secret: bytes, method: str, path: str, body: bytes = b"",
                     *, now: float | None = None, headers: dict | None = None,
                     sign_body: bytes | None = None) -> tuple[int, dict]:
        h = headers or signing.request_headers(machine_id, secret, method, path,
                                               body if sign_body is None else sign_body,
                                               now=time.time() if now is None else now)
        async with self.http.request(method, self.base + path, data=body, headers=h) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else {}

    async def total(self, machine_id: str) -> int:
        status, doc = await self.admin("GET", f"/admin/machines/{machine_id}/records")
        assert status == 200
        return doc["total"]


@pytest.fixture
async def cloud(tmp_path: pathlib.Path) -> AsyncIterator[Cloud]:
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN)
    try:
        async with aiohttp.ClientSession() as http:
            yield Cloud(f"http://127.0.0.1:{runner.addresses[0][1]}", http)
    finally:
        await runner.cleanup()


def order(i: int, total: int = 360, created: str = "") -> dict:
    created = created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"record_id": f"rec-{i}", "seq": i, "kind": "order", "created_at": created, "priority": 0,
            "payload": {"order_id": f"o-{i}", "lines": [{"sku_id": "cola", "qty": 2, "unit_price": 180}],
                        "total": total, "currency": "EUR"}}


def push_body(*records: dict) -> bytes:
    return json.dumps({"records": list(records)}).encode()


OUTBOX = "/v1/machines/m1/outbox"


async def test_unsigned_forged_stale_replayed_and_unknown_requests_get_401_and_store_nothing(
        cloud: Cloud) -> None:
    secret = await cloud.register("m1")
    await cloud.register("m2")
    body = push_body(order(1))
    cases = {
        "unknown_machine": await cloud.signed("ghost", secret, "POST", "/v1/machines/ghost/outbox", body),
        "bad_signature": await cloud.signed("m1", secret, "POST", OUTBOX, body, sign_body=b"{}"),
        "stale_timestamp": await cloud.signed("m1", secret, "POST", OUTBOX, body, now=time.time() - 301),
        "wrong_secret": await cloud.signed("m1", b"not-the-secret-xx", "POST", OUTBOX, body),
        # m1's valid signature on m2's path: the machine id in the path must be the signer
        "cross_machine": await cloud.signed("m1", secret, "POST", "/v1/machines/m2/outbox", body),
        "no_headers": await cloud.signed("m1", secret, "POST", OUTBOX, body, headers={"X-Machine-Id": "m1"}),
    }
    for name, (status, doc) in cases.items():
        assert status == 401, name
        assert doc["error"] in {"unknown_machine", "bad_signature", "stale_timestamp",
                                "missing_auth_headers"}, name
    assert cases["stale_timestamp"][1]["error"] == "stale_timestamp"
    assert abs(cases["stale_timestamp"][1]["server_time"] - time.time()) < 5
    assert await cloud.total("m1") == 0 and await cloud.total("m2") == 0

    headers = signing.request_headers("m1", secret, "POST", OUTBOX, body, now=time.time())
    assert (await cloud.signed("m1", secret, "POST", OUTBOX, body, headers=headers))[0] == 200
    replay = await cloud.signed("m1", secret, "POST", OUTBOX, body, headers=headers)
    assert replay == (401, {"error": "replayed_nonce"})
    orders = (await cloud.admin("GET", "/admin/machines/m1/orders"))[1]
    assert orders["count"] == 1 and await cloud.total("m1") == 1


async def test_ingest_is_idempotent_and_orders_view_sums_minor_units(cloud: Cloud) -> None:
    secret = await cloud.register("m1")
    body = push_body(order(1), order(2, total=540), order(3))
    status, first = await cloud.signed("m1", secret, "POST", OUTBOX, body)
    assert status == 200 and [a["status"] for a in first["acks"]] == ["stored"] * 3
    # same records again, gzip on the wire this time (signature covers the uncompressed body)
    h = signing.request_headers("m1", secret, "POST", OUTBOX, body, now=time.time())
    h["Content-Encoding"] = "gzip"
    status, again = await cloud.signed("m1", secret, "POST", OUTBOX, gzip.compress(body), headers=h)
    assert status == 200 and [a["status"] for a in again["acks"]] == ["duplicate"] * 3
    _, orders = await cloud.admin("GET", "/admin/machines/m1/orders")
    assert orders == {"count": 3, "total": 1260, "by_sku": {"cola": {"qty": 6, "revenue": 1080}}}
    assert await cloud.total("m1") == 3


async def test_invalid_record_is_acked_invalid_and_the_rest_stored(cloud: Cloud) -> None:
    secret = await cloud.register("m1")
    bad = order(2)
    bad["payload"]["total"] = 3.6
    status, doc = await cloud.signed("m1", secret, "POST", OUTBOX, push_body(order(1), bad, order(3)))
    assert status == 200
    assert [a["status"] for a in doc["acks"]] == ["stored", "invalid", "stored"]
    assert doc["acks"][1]["record_id"] == "rec-2" and "bad_money" in doc["acks"][1]["reason"]
    assert (await cloud.signed("m1", secret, "POST", OUTBOX, b"not json"))[0] == 400
    assert await cloud.total("m1") == 2


async def test_stock_and_alarm_views_follow_records_in_seq_order(cloud: Cloud) -> None:
    secret = await cloud.register("m1")
    ts = "2024-05-01T10:00:00Z"

    def rec(i: int, kind: str, payload: dict) -> dict:
        return {"record_id": f"r{i}", "seq": i, "kind": kind, "created_at": ts, "priority": 1,
                "payload": payload}

    records = [rec(1, "stock", {"levels": {"A1": 5, "A2": 3}}), rec(3, "stock", {"levels": {"A1": 4}}),
               rec(2, "stock", {"levels": {"A1": 9}}),  # older, arrives late: must not win
               rec(4, "alarm", {"code": "door_open", "state": "raised"}),
               rec(5, "alarm", {"code": "temp_high", "state": "raised", "detail": {"t_c": 9.1}}),
               rec(6, "alarm", {"code": "door_open", "state": "cleared"})]
    assert (await cloud.signed("m1", secret, "POST", OUTBOX, push_body(*records)))[0] == 200
    assert (await cloud.admin("GET", "/admin/machines/m1/stock"))[1] == {"A1": 4, "A2": 3}
    alarms = (await cloud.admin("GET", "/admin/machines/m1/alarms"))[1]
    assert [a["code"] for a in alarms["active"]] == ["temp_high"]
    assert alarms["active"][0]["detail"] == {"t_c": 9.1}
    assert [a["code"] for a in alarms["cleared"]] == ["door_open"]


async def test_admin_api_needs_the_token_and_validates_documents(cloud: Cloud) -> None:
    async with cloud.http.get(cloud.base + "/admin/machines") as r:
        assert r.status == 401
    async with cloud.http.get(cloud.base + "/admin/machines", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401
    secret = await cloud.register("m1")
    assert (await cloud.admin("PUT", "/admin/machines/m1/config", DEMO)) == (200, {"version": 1})
    broken = dict(DEMO, slots=DEMO["slots"] + [{"slot_id": "Z9", "sku_id": "nope", "capacity": 5}])
    status, doc = await cloud.admin("PUT", "/admin/machines/m1/config", broken)
    assert status == 400 and doc["error"] == "invalid_doc" and "unknown sku_id" in doc["reason"]
    status, doc = await cloud.admin("POST", "/admin/machines/m1/prices", {"sku_id": "cola", "price": 1.9})
    assert status == 400 and "price must be int" in doc["reason"]
    assert (await cloud.admin("POST", "/admin/machines/m1/prices", {"sku_id": "cola", "price": 190})) == \
        (200, {"version": 2})
    assert (await cloud.admin("PUT", "/admin/machines/m1/settings", {"setpoint_c": 99}))[0] == 400
    assert (await cloud.admin("PUT", "/admin/machines/m1/settings", {"setpoint_c": 4})) == \
        (200, {"version": 3})
    assert (await cloud.admin("POST", "/admin/machines/ghost/commands", {"name": "vend"}))[0] == 404
    assert (await cloud.admin("POST", "/admin/machines/m1/tokens", {}))[0] == 400

    path = "/v1/machines/m1/config"
    status, cfg = await cloud.signed("m1", secret, "GET", path)
    assert status == 200 and cfg["version"] == 3 and cfg["doc"]["version"] == 3
    assert cfg["doc"]["settings"] == {"setpoint_c": 4}
    assert [s["price"] for s in cfg["doc"]["skus"] if s["sku_id"] == "cola"] == [190]
    h = signing.request_headers("m1", secret, "GET", path, b"", now=time.time())
    async with cloud.http.get(cloud.base + path, headers=dict(h, **{"If-None-Match": '"3"'})) as r:
        assert r.status == 304 and r.headers["ETag"] == '"3"'


async def test_commands_stay_pending_until_their_result_is_posted(cloud: Cloud) -> None:
    secret = await cloud.register("m1")
    status, doc = await cloud.admin("POST", "/admin/machines/m1/commands",
                                    {"name": "vend", "args": {"slot": "A3"}, "ttl_s": 600})
    command_id = doc["command_id"]
    poll = "/v1/machines/m1/commands?wait=0"
    for _ in range(2):  # a lost downlink: the same command comes again
        status, got = await cloud.signed("m1", secret, "GET", poll)
        assert status == 200 and [c["command_id"] for c in got["commands"]] == [command_id]
        assert signing.verify_command(secret, got["commands"][0])
        assert got["commands"][0]["args"] == {"slot": "A3"}
    result = json.dumps({"status": "ok", "detail": {"dispensed": 1}}).encode()
    assert (await cloud.signed("m1", secret, "POST", f"/v1/machines/m1/commands/{command_id}/result",
                               result))[0] == 200
    assert (await cloud.signed("m1", secret, "GET", poll))[1]["commands"] == []
    listed = (await cloud.admin("GET", "/admin/machines/m1/commands"))[1]["commands"]
    assert listed[0]["state"] == "done" and listed[0]["deliveries"] == 2
    assert listed[0]["result_status"] == "ok" and listed[0]["result_detail"] == {"dispensed": 1}
    assert (await cloud.signed("m1", secret, "POST", "/v1/machines/m1/commands/nope/result",
                               result))[0] == 404


async def test_long_poll_returns_as_soon_as_a_command_is_enqueued(cloud: Cloud) -> None:
    secret = await cloud.register("m1")
    poll = asyncio.create_task(cloud.signed("m1", secret, "GET", "/v1/machines/m1/commands?wait=20"))
    await asyncio.sleep(0.2)  # the observation window: the long poll is parked, not answered
    assert not poll.done()
    t0 = time.monotonic()
    await cloud.admin("POST", "/admin/machines/m1/commands", {"name": "set_setpoint", "args": {"c": 4}})
    status, got = await asyncio.wait_for(poll, 5)
    assert status == 200 and got["commands"][0]["name"] == "set_setpoint"
    assert time.monotonic() - t0 < 4  # at once, not after the 20 s wait (bound generous for load)


async def test_fleet_page_shows_machines_alarms_and_todays_sales(cloud: Cloud) -> None:
    secret = await cloud.register("m1")
    await cloud.register("m2")
    alarm = {"record_id": "a1", "seq": 9, "kind": "alarm", "priority": 0,
             "created_at": "2024-05-01T10:00:00Z", "payload": {"code": "temp_high", "state": "raised"}}
    h = signing.request_headers("m1", secret, "POST", OUTBOX, push_body(order(1), alarm), now=time.time())
    h["X-Backlog"] = "17"
    assert (await cloud.signed("m1", secret, "POST", OUTBOX, push_body(order(1), alarm), headers=h))[0] == 200
    async with cloud.http.get(cloud.base + "/fleet") as r:
        assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]
    async with cloud.http.get(cloud.base + "/fleet", headers={"Authorization": aiohttp.encode_basic_auth("admin", TOKEN)}) as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert 'data-machine="m1"' in page and 'data-machine="m2"' in page
    assert "temp_high" in page and "3.60" in page and ">17<" in page
    assert "http://" not in page and "https://" not in page  # no external assets


def test_cli_serves_and_stops_cleanly_on_sigterm(tmp_path: pathlib.Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sync.refcloud", "--db", str(tmp_path / "c.db"),
                             "--port", str(port), "--admin-token", TOKEN], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "refcloud did not start"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "sync.refcloud", "--db", "x.db"], cwd=ROOT,
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode == 2 and "admin-token" in bad.stderr

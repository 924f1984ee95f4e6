"""Issue 8 end to end: the reference cloud issues Ed25519 offline tokens and pushes a revocation;
then the network is cut. A customer's phone (rendered QR) in front of the scanner camera opens a
take-and-go session with a valid token, takes a can, and the order — flagged offline — reaches the
cloud once the network is back. Expired, wrong-scope, tampered, revoked and replayed tokens are
refused with their reason in the ledger, and the door stays locked."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from edge.core.offline_token import TokenClaims, b64url_encode, canonical_json, encode
from edge.services.offline_auth import start_offline_auth
from hw_sim.camera.server import CameraServer
from hw_sim.customers import Scenario, apply
from hw_sim.phone import PhoneScreen
from sync.refcloud.store import Store
from tests.support.flaky_proxy import FlakyProxy
from tests.support.rigs.cloud import start_cloud, sync_config
from tests.support.rigs.takeandgo import TakeAndGoRig, door_seen_open, start_takeandgo_rig, wait_for

pytestmark = pytest.mark.timeout(120)
ADMIN = "offline-e2e-admin-token"
MACHINE = "demo-0001"


@dataclass
class Env:
    rig: TakeAndGoRig
    auth: Any
    phone: PhoneScreen
    proxy: FlakyProxy
    http: aiohttp.ClientSession
    cloud: str
    cloud_db: str

    async def admin(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with asyncio.timeout(10):
            async with self.http.request(method, f"{self.cloud}{path}", json=body) as r:
                assert r.status == status, (path, r.status, await r.text())
                return await r.json()

    async def issue(self, customer: str, limit: int, **kw: Any) -> str:
        doc = await self.admin("POST", f"/admin/machines/{MACHINE}/tokens",
                               {"customer_ref": customer, "limit": limit, **kw}, status=201)
        return str(doc["token"])

    async def refusals(self) -> list[dict[str, Any]]:
        rows = await self.rig.daemon.db.fetchall(  # type: ignore[union-attr]
            "SELECT data FROM events WHERE kind='offline_token_refused' ORDER BY event_id")
        return [json.loads(r["data"]) for r in rows]

    async def sessions(self) -> int:
        row = await self.rig.daemon.db.fetchone("SELECT COUNT(*) AS n FROM sessions")  # type: ignore[union-attr]
        return int(row["n"])


@pytest.fixture
async def env(tmp_path):
    secret_hex = secrets.token_hex(32)
    cloud, cloud_port = await start_cloud(str(tmp_path), ADMIN, secret_hex, MACHINE)
    proxy = await FlakyProxy("127.0.0.1", cloud_port).start()
    phone = PhoneScreen()
    scanner = CameraServer({"scanner": phone})
    await scanner.start()
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"})
    base = f"http://127.0.0.1:{cloud_port}"
    rig = None
    try:
        async with http.get(f"{base}/admin/token-key") as r:
            key = await r.json()
        extra = sync_config(str(tmp_path), proxy.port, secret_hex).replace("poll_wait_s = 5", "poll_wait_s = 1")
        extra += f"""
[offline_auth]
enabled = true
public_keys = {{ "{key['kid']}" = "{key['public_key']}" }}
scanner_source = "{scanner.url('scanner')}"
fleet = "north"
scan_interval_s = 0.1
clock_skew_s = 5
"""
        rig = await start_takeandgo_rig(str(tmp_path), seed=3, extra=extra,
                                        secrets_file=str(tmp_path / "secrets.toml"))
        d = rig.daemon
        auth = d.machine.services.offline_auth or await start_offline_auth(  # type: ignore[union-attr]
            d.config, d.db, d.machine, d.supervisor, d.inbox)
        yield Env(rig, auth, phone, proxy, http, base, str(tmp_path / "refcloud.sqlite3"))
    finally:
        if rig is not None:
            await rig.stop()
        await scanner.stop()
        await http.close()
        await proxy.stop()
        await cloud.cleanup()


def expired_token(cloud_db: str) -> str:
    """A token the cloud signed an hour ago, valid for ten minutes (signed with the cloud's own key)."""
    store = Store(cloud_db)
    try:
        kid, key = store.token_key(time.time())
    finally:
        store.close()
    now = int(time.time())
    return encode(TokenClaims(kid, f"machine:{MACHINE}", "cust-late", 1000, "EUR", now - 3000, now - 3600,
                              secrets.token_urlsafe(16)), key.sign)


def tampered(token: str) -> str:
    head, p64, sig = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(p64 + "=" * (-len(p64) % 4)))
    doc["limit"] = 1_000_000  # a bigger spending limit than the cloud granted
    return f"{head}.{b64url_encode(canonical_json(doc))}.{sig}"


async def show_and_expect_refusal(env: Env, token: str, reason: str) -> dict[str, Any]:
    before, sessions = len(await env.refusals()), await env.sessions()
    env.phone.show(token)
    async with asyncio.timeout(10):
        while len(await env.refusals()) == before:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the code stays in view a little: still one refusal, door still locked
    env.phone.clear()
    new = (await env.refusals())[before:]
    assert [e["reason"] for e in new] == [reason], new
    assert env.rig.plant_sim.io.locked, f"door unlocked for a {reason} token"
    assert await env.sessions() == sessions
    return new[0]


async def offline_shopping(env: Env, token: str, actions: list[Any]) -> dict[str, Any]:
    """Show the token, wait for the unlock, open, take, close; returns the final session row."""
    rig, db = env.rig, env.rig.daemon.db
    assert db is not None
    env.phone.show(token)
    await wait_for(lambda: not rig.plant_sim.io.locked, 15.0)
    env.phone.clear()
    row = await db.fetchone("SELECT session_id FROM sessions ORDER BY created_at DESC LIMIT 1")
    assert row is not None
    assert rig.plant_sim.open_door(), "door did not open although unlocked"
    await door_seen_open(rig, row["session_id"])
    apply(rig.world, Scenario("scripted", actions))
    await asyncio.sleep(1.0)  # the scenario: the shopper lingers before closing (the scales see the take)
    rig.plant_sim.close_door()
    async with asyncio.timeout(30):
        while True:
            s = await db.fetchone("SELECT * FROM sessions WHERE session_id=?", (row["session_id"],))
            if s is not None and s["state"] in ("charged", "needs_review", "void"):
                return dict(s)
            await asyncio.sleep(0.05)


async def test_offline_token_opens_session_without_network_and_bad_tokens_stay_locked(env: Env):
    # online: the customer's app got its tokens earlier; a misbehaving customer is revoked
    valid = await env.issue("cust-0042", 1000)
    other_fleet = await env.issue("cust-0042", 1000, scope="fleet", fleet="south")
    banned = await env.issue("cust-banned", 1000)
    forged = tampered(await env.issue("cust-0042", 200))
    late = expired_token(env.cloud_db)
    await env.admin("POST", "/admin/token-revocations", {"customers": ["cust-banned"], "reason": "fraud"}, 201)
    await wait_for(lambda: "cust-banned" in env.auth.revoked.customers, 15.0, step_s=0.05)
    await env.admin("POST", f"/admin/machines/{MACHINE}/tokens", {"customer_ref": "cust-banned", "limit": 1}, 409)

    env.proxy.drop_rate = 1.0  # the network is cut: every request to the cloud dies in the proxy
    assert (await show_and_expect_refusal(env, late, "expired"))["customer"] == "cust-late"
    assert "fleet:south" in (await show_and_expect_refusal(env, other_fleet, "wrong_scope"))["detail"]
    await show_and_expect_refusal(env, forged, "bad_signature")
    assert (await show_and_expect_refusal(env, banned, "revoked"))["customer"] == "cust-banned"
    await show_and_expect_refusal(env, "https://example.com/not-a-token", "malformed")

    row = await offline_shopping(env, valid, [("take", "F1")])
    assert row["state"] == "charged" and row["offline"] == 1 and row["limit_amount"] == 1000
    order = await env.rig.daemon.db.fetchone(  # type: ignore[union-attr]
        "SELECT status, total_amount, offline, payment_ref FROM orders WHERE order_id=?", (row["session_id"],))
    assert dict(order) == {"status": "completed", "total_amount": 180, "offline": 1, "payment_ref": "cust-0042"}
    assert env.rig.plant_sim.io.locked

    await asyncio.sleep(0.6)  # the phone was away from the scanner; the same code shown again
    await show_and_expect_refusal(env, valid, "replayed")
    assert (await env.admin("GET", f"/admin/machines/{MACHINE}/orders"))["count"] == 0  # still offline

    env.proxy.drop_rate = 0.0  # the network returns: the offline order reaches the cloud
    async with asyncio.timeout(45):
        while (orders := await env.admin("GET", f"/admin/machines/{MACHINE}/orders"))["count"] < 1:
            await asyncio.sleep(0.2)
    assert orders["count"] == 1 and orders["total"] == 180
    assert orders["by_sku"] == {"cola": {"qty": 1, "revenue": 180}}
    offline = await env.admin("GET", f"/admin/machines/{MACHINE}/offline-orders")
    assert offline == {"count": 1, "total": 180, "orders": [
        {"order_id": row["session_id"], "total": 180, "customer_ref": "cust-0042"}]}
    assert env.auth.status()["counters"]["accepted"] == 1

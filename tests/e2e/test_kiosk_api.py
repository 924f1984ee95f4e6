"""The kiosk API (issue 15's out-of-process demo, docs/web-api.md): a `kiosk` account — the machine's own
touchscreen app — lists the slots and sells through the real daemon, over real HTTP, against the
simulated vend board and a real SQLite ledger. Every refusal is checked by what a user would see
(status, error code) and by what did not move (ledger, simulator)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from edge.ledger import repo
from edge.services.accounts import Accounts
from edge.web.app import route_table
from tests.e2e.test_web_security import PASSWORD, PUBLIC, concrete, web  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(90)

SELL, SLOTS = "/api/v1/kiosk/sell", "/api/v1/kiosk/slots"
KIOSK_ROUTES = {("POST", SELL), ("GET", SLOTS)}
EVERY_ACCOUNT = {("GET", "/api/v1/me"), ("POST", "/api/v1/logout"), ("POST", "/logout")}


@pytest.fixture
async def kiosk_web(web):  # noqa: F811
    await Accounts(web.rig.daemon.machine.db).add("screen", "kiosk", PASSWORD)
    return web


async def _slot(s, slot_id: str) -> dict:
    r = await s.get(SLOTS)
    assert r.status == 200
    return next(x for x in (await r.json())["slots"] if x["slot_id"] == slot_id)


async def test_a_kiosk_sale_completes_the_order_takes_the_stock_and_turns_the_spiral_once(kiosk_web):
    w, db = kiosk_web, kiosk_web.rig.daemon.db
    s, csrf = await w.login("screen")
    async with s:
        me = await (await s.get("/api/v1/me")).json()
        assert me["role"] == "kiosk"
        before = await _slot(s, "A1")
        assert before["available"] and before["reason"] is None and before["sku_id"] == "cola"
        assert before["price"] == 180 and before["count"] == (await repo.stock(db))["A1"].count > 0
        r = await s.post(SELL, json={"slot": "A1", "payment_ref": "card:kiosk-1"}, headers={"X-CSRF-Token": csrf})
        body = await r.json()
        assert r.status == 200 and body["ok"] is True, body
        order = body["result"]
        assert order["status"] == "completed" and order["payment_ref"] == "card:kiosk-1"
        after = await _slot(s, "A1")
    doc = await repo.order_doc(db, order["order_id"])
    assert doc["status"] == "completed" and doc["kind"] == "vend" and doc["total"] == 180
    assert after["count"] == before["count"] - 1 == (await repo.stock(db))["A1"].count
    assert w.rig.sim.dispensed["A1"] == 1 and w.rig.sim.total_dispensed == 1


async def test_a_sold_out_slot_is_listed_unavailable_and_its_sale_is_a_409_with_the_reason(kiosk_web):
    w, db = kiosk_web, kiosk_web.rig.daemon.db
    await w.rig.daemon.machine.restock("B2", 0, actor="test")
    async with db.tx() as tx:  # as the vend flow leaves a slot after repeated jams
        await repo.set_slot_disabled(tx, "C1", True, "jammed")
    s, csrf = await w.login("screen")
    async with s:
        listed = await _slot(s, "B2")
        assert (listed["available"], listed["reason"], listed["count"]) == (False, "sold_out", 0)
        assert (await _slot(s, "C1"))["reason"] == "slot_disabled"
        before = await w.counts()
        r = await s.post(SELL, json={"slot": "B2"}, headers={"X-CSRF-Token": csrf})
        body = await r.json()
        assert r.status == 409 and body["error"] == "sold_out", body
        r = await s.post(SELL, json={"slot": "C1", "payment_ref": "card:x"}, headers={"X-CSRF-Token": csrf})
        assert r.status == 409 and (await r.json())["error"] == "slot_disabled"
    after = await w.counts()
    assert after == before and after["dispensed"] == 0


BAD_BODIES = [{}, {"slot": None}, {"slot": 1}, {"slot": ["A1"]}, {"slot": {"x": 1}}, {"slot": ""},
              {"slot": "A1; DROP TABLE orders"}, {"slot": "../../etc"}, {"slot": "9" * 400}, {"slot": "\x00"},
              {"slot": "Z99"}, {"slot": "A1", "payment_ref": 5}, {"slot": "A1", "payment_ref": ["x"]},
              {"slot": "A1", "payment_ref": "x" * 65}, {"slot": "A1", "payment_ref": "card x"},
              {"slot": "A1", "payment_ref": "é"}, {"slot": "A1", "payment_ref": "\n"}, {"slot": True}]


async def test_bad_bodies_are_400_with_a_json_error_and_change_nothing(kiosk_web):
    w = kiosk_web
    s, csrf = await w.login("screen")
    h = {"X-CSRF-Token": csrf}
    async with s:
        before = await w.counts()
        for bad in BAD_BODIES:
            r = await s.post(SELL, json=bad, headers=h)
            body = await r.json()
            assert r.status == 400 and body["error"] in ("bad_request", "unknown_slot"), (bad, r.status, body)
        for raw in ("[1, 2]", '"A1"', "{", "null", "1e999"):
            r = await s.post(SELL, data=raw, headers={**h, "Content-Type": "application/json"})
            assert r.status == 400 and "error" in await r.json(), raw
        r = await s.post(SELL, data="slot=A1", headers={**h, "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 415
        for token in (None, "forged"):  # the CSRF rules of every other POST
            r = await s.post(SELL, json={"slot": "A1"}, headers={"X-CSRF-Token": token} if token else {})
            assert r.status == 403 and (await r.json())["error"] == "csrf"
        assert await w.counts() == before


async def test_a_kiosk_account_reaches_only_the_kiosk_routes_and_a_viewer_cannot_sell(kiosk_web):
    w = kiosk_web
    s, csrf = await w.login("screen")
    v, vcsrf = await w.login("view")
    before = await w.counts()  # after the logins (each is an audit event)
    async with s:
        h = {"X-CSRF-Token": csrf}
        r = await s.post("/api/v1/stock/restock", json={"slot_id": "A1", "count": 2}, headers=h)
        assert r.status == 403 and (await r.json())["error"] == "forbidden"
        for route in route_table(w.app):  # everything but its own routes and the self-service ones
            key = (route["method"], route["path"])
            if route["method"] == "HEAD" or key in PUBLIC | KIOSK_ROUTES | EVERY_ACCOUNT:
                continue
            path = concrete(route["path"])
            resp = await (s.get(path, allow_redirects=False) if route["method"] == "GET"
                          else s.post(path, json={"slot_id": "A1", "confirm": True}, headers=h))
            assert resp.status == 403, (key, resp.status)
    async with v:
        r = await v.post(SELL, json={"slot": "A1"}, headers={"X-CSRF-Token": vcsrf})
        assert r.status == 403 and (await r.json())["error"] == "forbidden"
        assert (await v.get(SLOTS)).status == 403
    assert await w.counts() == before
    t, tcsrf = await w.login("tech")  # technicians may use the kiosk routes too
    async with t:
        assert (await _slot(t, "A2"))["available"]
        r = await t.post(SELL, json={"slot": "A2", "payment_ref": ""}, headers={"X-CSRF-Token": tcsrf})
        assert r.status == 200 and (await r.json())["result"]["status"] == "completed"
    assert w.rig.sim.dispensed["A2"] == 1


async def test_the_cli_creates_a_kiosk_account(kiosk_web):
    """Through the real command line (argparse's --role choices included), as the demo provisions one."""
    w = kiosk_web
    cfg = w.rig.state_dir / "vendedge.toml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "user", "add", "lobby", "--role", "kiosk", "--password-stdin",
        "--config", str(cfg), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(b"a long enough secret\n"), 60)
    assert proc.returncode == 0, err.decode()
    assert "added lobby (kiosk)" in out.decode()
    s, _ = await w.login("lobby", "a long enough secret")
    async with s:
        assert (await (await s.get("/api/v1/me")).json())["role"] == "kiosk"
        assert (await s.get("/api/v1/status")).status == 403

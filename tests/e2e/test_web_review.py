"""The take-and-go review queue is actionable: approve the best guess, correct the basket, or void.

Against the real take-and-go rig (plant, scales, cameras, ledger) and the real web app over HTTP: a
basket the machine could not decide is not charged (its order waits in needs_review and no
`completed` order record is queued for the cloud); the technician's decision charges it (or not),
moves the stock, is audited, is queued for the cloud, and cannot be made twice.
"""

from __future__ import annotations

import json
import random

import aiohttp
import pytest

from edge.clock import SystemClock
from edge.config import Secrets, WebConfig
from edge.ledger import repo
from edge.services.accounts import Accounts
from edge.web.app import bound_port, start_web
from tests.support.review import basket_for_review
from tests.support.rigs.takeandgo import start_takeandgo_rig

PASSWORD = "correct horse battery"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def review_rig(tmp_path):
    """One basket waiting for review (a dead camera on the shelf it was taken from)."""
    rig = await start_takeandgo_rig(str(tmp_path), seed=3)
    runner = None
    try:
        await basket_for_review(rig, "s-rev")
        machine = rig.daemon.machine
        await Accounts(machine.db).add("tech", "technician", PASSWORD)
        await Accounts(machine.db).add("viewer", "viewer", PASSWORD)
        runner = await start_web(
            machine, WebConfig(host="127.0.0.1", port=0), Secrets(), session_clock=SystemClock()
        )
        yield rig, f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        if runner is not None:
            await runner.cleanup()
        await rig.stop()


async def login(base: str, name: str = "tech") -> aiohttp.ClientSession:
    s = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await s.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert r.status == 200
    s.headers["X-CSRF-Token"] = (await r.json())["csrf"]
    return s


async def state(db, sid="s-rev"):
    order = await db.fetchone("SELECT status, total_amount FROM orders WHERE order_id=?", (sid,))
    lines = [
        dict(r)
        for r in await db.fetchall(
            "SELECT sku_id, slot_id, qty, unit_price FROM order_lines WHERE order_id=? ORDER BY line_no",
            (sid,),
        )
    ]
    session = await db.fetchone("SELECT state FROM sessions WHERE session_id=?", (sid,))
    records = {
        r["record_id"]: json.loads(r["payload"])
        for r in await db.fetchall("SELECT record_id, payload FROM outbox WHERE kind='order'")
    }
    stock = {r["slot_id"]: r["count"] for r in await db.fetchall("SELECT slot_id, count FROM stock")}
    return order, lines, session["state"], records, stock


async def test_nothing_is_charged_before_the_decision_and_approve_charges_the_guess(review_rig):
    rig, base = review_rig
    db = rig.daemon.db
    order, guess, sstate, records, stock0 = await state(db)
    assert order["status"] == "needs_review" and sstate == "needs_review" and guess
    assert "order-s-rev-completed" not in records  # the cloud has nothing to charge yet
    async with await login(base) as s:
        queue = (await (await s.get("/api/v1/sales")).json())["review_queue"]
        assert [q["session_id"] for q in queue] == ["s-rev"]
        r = await s.post("/api/v1/review/s-rev", json={"decision": "approve", "confirm": True})
        assert r.status == 200, await r.text()
        result = (await r.json())["result"]
        order, lines, sstate, records, stock = await state(db)
        want_total = sum(ln["qty"] * ln["unit_price"] for ln in guess)
        assert result["status"] == "completed" and result["total"] == want_total
        assert order["status"] == "completed" and order["total_amount"] == want_total and sstate == "charged"
        assert lines == guess
        assert records["order-s-rev-completed"]["total"] == want_total  # queued for the cloud to charge
        for ln in guess:
            assert stock[ln["slot_id"]] == stock0[ln["slot_id"]] - ln["qty"]
        audit = [
            json.loads(r["data"]) for r in await db.fetchall("SELECT data FROM events WHERE kind='audit'")
        ]
        assert {"actor": "tech", "action": "review_decide", "decision": "approve"}.items() <= audit[
            -1
        ].items()
        assert (await (await s.get("/api/v1/sales")).json())["review_queue"] == []
        again = await s.post("/api/v1/review/s-rev", json={"decision": "void", "confirm": True})
        assert again.status == 404  # decided once; a second decision changes nothing
        assert (await state(db))[0]["status"] == "completed"


async def test_correct_charges_the_corrected_basket_at_planogram_prices(review_rig):
    rig, base = review_rig
    db = rig.daemon.db
    _, guess, _, _, stock0 = await state(db)
    planogram = await repo.current_planogram(db)
    async with await login(base) as s:
        products = (await (await s.get("/api/v1/sales")).json())["products"]
        other = next(p["sku_id"] for p in products if p["sku_id"] not in {ln["sku_id"] for ln in guess})
        bad = await s.post(
            "/api/v1/review/s-rev", json={"decision": "correct", "basket": {"nope": 1}, "confirm": True}
        )
        assert bad.status == 400 and (await state(db))[0]["status"] == "needs_review"
        r = await s.post(
            "/api/v1/review/s-rev", json={"decision": "correct", "basket": {other: 2}, "confirm": True}
        )
        assert r.status == 200, await r.text()
    order, lines, sstate, records, stock = await state(db)
    unit = planogram.skus[other].price.amount
    assert [(ln["sku_id"], ln["qty"], ln["unit_price"]) for ln in lines] == [(other, 2, unit)]
    assert dict(order) == {"status": "completed", "total_amount": 2 * unit} and sstate == "charged"
    assert records["order-s-rev-completed"]["lines"][0]["sku_id"] == other
    slot = lines[0]["slot_id"]
    assert planogram.slots[slot].sku_id == other and planogram.slots[slot].shelf is not None
    assert stock[slot] == max(0, stock0[slot] - 2)


async def test_void_charges_nothing_and_a_viewer_cannot_decide(review_rig):
    rig, base = review_rig
    db = rig.daemon.db
    *_, stock0 = await state(db)
    async with await login(base, "viewer") as v:
        r = await v.post("/api/v1/review/s-rev", json={"decision": "approve", "confirm": True})
        assert r.status == 403 and (await state(db))[0]["status"] == "needs_review"
    async with await login(base) as s:
        assert (await s.post("/api/v1/review/s-rev", json={"decision": "void"})).status == 400  # no confirm
        r = await s.post("/api/v1/review/s-rev", json={"decision": "void", "confirm": True})
        assert r.status == 200
    order, lines, sstate, records, stock = await state(db)
    assert dict(order) == {"status": "void", "total_amount": 0} and lines == [] and sstate == "void"
    assert records["order-s-rev-void"]["total"] == 0 and "order-s-rev-completed" not in records
    assert stock == stock0


async def test_the_sales_page_form_decides(review_rig):
    """The page's own form (what the browser posts): approve with the confirmation box ticked."""
    rig, base = review_rig
    async with await login(base) as s:
        page = await (await s.get("/sales")).text()
        assert 'action="/review/s-rev"' in page and "not charged until decided" in page
        csrf = s.headers["X-CSRF-Token"]
        r = await s.post("/review/s-rev", data={"csrf": csrf, "decision": "approve"}, allow_redirects=False)
        assert (
            r.status == 303 and (await state(rig.daemon.db))[0]["status"] == "needs_review"
        )  # not confirmed
        r = await s.post("/review/s-rev", data={"csrf": csrf, "decision": "approve", "confirm": "yes"})
        assert r.status == 200 and "review s-rev: completed" in await r.text()
    assert (await state(rig.daemon.db))[0]["status"] == "completed"


async def test_the_cloud_charges_the_basket_only_after_the_decision(review_rig, tmp_path):
    """A real SyncClient pushes the ledger's outbox to the reference cloud before and after the decision:
    the cloud's orders (what it charges) hold nothing for the basket in review, then the approved total."""
    from edge.ledger.outbox import LedgerOutbox
    from edge.services.cloud import CommandInbox, LedgerConfigSink
    from sync.client import SyncClient
    from sync.refcloud import serve as serve_cloud

    rig, base = review_rig
    db, machine = rig.daemon.db, rig.daemon.machine
    secret = b"review-test-machine-secret-0001"
    cloud = await serve_cloud("127.0.0.1", 0, str(tmp_path / "cloud.db"), "admin-token")
    cloud_base = f"http://127.0.0.1:{cloud.addresses[0][1]}"
    admin = {"Authorization": "Bearer admin-token"}
    client = SyncClient(
        cloud_base,
        machine.machine_id,
        secret,
        LedgerOutbox(db),
        LedgerConfigSink(db, lambda *_: None),
        CommandInbox(db),
    )
    try:
        async with aiohttp.ClientSession() as http:
            r = await http.post(
                f"{cloud_base}/admin/machines",
                headers=admin,
                json={"machine_id": machine.machine_id, "secret_hex": secret.hex()},
            )
            assert r.status == 201

            async def cloud_orders() -> dict:
                await client.push_once()
                async with http.get(
                    f"{cloud_base}/admin/machines/{machine.machine_id}/orders", headers=admin
                ) as r:
                    return await r.json()

            before = await cloud_orders()
            assert before["count"] == 0 and before["total"] == 0  # in review: nothing to charge
            async with await login(base) as s:
                r = await s.post("/api/v1/review/s-rev", json={"decision": "approve", "confirm": True})
                assert r.status == 200
                total = (await r.json())["result"]["total"]
            after = await cloud_orders()
            assert after["count"] == 1 and after["total"] == total > 0
    finally:
        await client.close()
        await cloud.cleanup()


async def test_hostile_review_requests_get_clear_answers_and_leave_the_basket_waiting(review_rig):
    """Every request here is invalid (odd decisions, baskets no one could charge, odd ids): each gets a
    documented 3xx/4xx, never a 5xx, and the basket is still waiting afterwards."""
    rig, base = review_rig
    decisions = [None, True, 1, "", "approve ", "APPROVE", "<b>", "é" * 300, [], {}, "correct"]
    baskets = [
        None,
        True,
        1,
        [],
        {},
        {"F1": 2**70},
        {"F1": -1},
        {"F1": 1.0},
        {"F1": True},
        {"F1": "1"},
        {"nope": 1},
        {"F1": 0},
        {"F1": {"F1": 1}},
        ["F1"],
    ]
    form_qty = ["-1", "1.5", "x", "9" * 30, "é", "", "0", " 0 "]
    ids = ["s-rev", "s-none", "x" * 5000, "..", "s-rev%00"]
    rng = random.Random(14)
    async with await login(base) as s:
        for i in range(120):
            sid, decision = rng.choice(ids), rng.choice(decisions)
            if i % 2:
                body = {"decision": decision, "basket": rng.choice(baskets), "confirm": True}
                r = await s.post(f"/api/v1/review/{sid}", json=body)
            else:
                form = {
                    "csrf": s.headers["X-CSRF-Token"],
                    "decision": str(decision),
                    "confirm": "yes",
                    "qty_F1": rng.choice(form_qty),
                }
                r = await s.post(f"/review/{sid}", data=form, allow_redirects=False)
            assert r.status in {303, 400, 404, 405, 409, 413}, (
                sid[:20],
                decision,
                r.status,
                (await r.text())[:200],
            )
    order, _, sstate, records, _ = await state(rig.daemon.db)
    assert order["status"] == "needs_review" and sstate == "needs_review"
    assert [k for k in records if k.startswith("order-s-rev-")] == ["order-s-rev-needs_review"]

"""Issue 12 on the technician page: a vend the board could not account for is listed on the Stock
page and settled by the technician's count — over real HTTP, against the real daemon and simulator."""

from __future__ import annotations

import asyncio
import json

import pytest

from edge.ledger import repo
from tests.e2e.test_web_security import web  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(60)


async def _needs_count(web, slot: str) -> dict:  # noqa: F811
    machine = web.rig.daemon.machine
    web.rig.sim.brownout("mid_motor")  # the board resets while the motor turns: nothing falls
    order = await machine.sell(slot, "card:web")
    async with asyncio.timeout(10):
        while machine.vend.unreconciled:
            await asyncio.sleep(0.02)
    assert (await repo.order_doc(web.rig.daemon.db, order["order_id"]))["status"] == "needs_count"
    return order


async def test_page_lists_the_vend_and_the_form_settles_it(web):  # noqa: F811
    order = await _needs_count(web, "B2")
    sim, db = web.rig.sim, web.rig.daemon.db
    s, csrf = await web.login("tech")
    async with s:
        page = await (await s.get("/stock")).text()
        assert 'id="needs-count"' in page and f'data-order="{order["order_id"]}"' in page
        bad = await s.post("/stock/count", data={"csrf": csrf, "order_id": order["order_id"], "counted": "-1"})
        assert "whole number" in await bad.text()
        r = await s.post("/stock/count", data={"csrf": csrf, "order_id": order["order_id"],
                                               "counted": str(sim.stock["B2"])})
        text = await r.text()
        assert r.status == 200 and "item did not fall, order failed (refund due)" in text
        assert 'id="needs-count"' not in text
    doc = await repo.order_doc(db, order["order_id"])
    assert (doc["status"], doc["refund_due"]) == ("failed", True)
    assert not (await repo.stock(db))["B2"].disabled
    audit = [json.loads(r["data"]) for r in await db.fetchall("SELECT data FROM events WHERE kind='vend_counted'")]
    assert [a["actor"] for a in audit] == ["tech"]


async def test_api_count_validates_and_a_viewer_cannot_settle(web):  # noqa: F811
    order = await _needs_count(web, "C2")
    sim, db = web.rig.sim, web.rig.daemon.db
    url = f"/api/v1/vends/{order['order_id']}/count"
    v, vcsrf = await web.login("view")
    async with v:
        page = await (await v.get("/stock")).text()
        assert "a technician counts" in page and 'action="/stock/count"' not in page
        assert (await v.post(url, json={"counted": 1}, headers={"X-CSRF-Token": vcsrf})).status == 403
    s, csrf = await web.login("tech")
    async with s:
        h = {"X-CSRF-Token": csrf}
        for bad in (True, -1, 1.5, "3", None):
            assert (await s.post(url, json={"counted": bad}, headers=h)).status == 400, bad
        assert (await s.post("/api/v1/vends/nope/count", json={"counted": 1}, headers=h)).status == 409
        # pretend the item did fall: one fewer than the ledger says
        r = await s.post(url, json={"counted": sim.stock["C2"] - 1}, headers=h)
        assert r.status == 200 and (await r.json())["result"]["status"] == "completed"
        again = await s.post(url, json={"counted": 0}, headers=h)
        assert again.status == 409 and (await again.json())["error"] == "not_needs_count"
    assert (await repo.stock(db))["C2"].count == sim.stock["C2"] - 1  # the ledger follows the count
    assert not await db.fetchall("SELECT 1 FROM events WHERE kind='stock_discrepancy'")  # one fewer is none

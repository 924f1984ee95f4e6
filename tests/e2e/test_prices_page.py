"""Prices page and API over real HTTP against the real daemon + simulators: each slot's price now,
the rule that sets it, expired lanes not for sale, and the rules in force (issue 18)."""

from __future__ import annotations

import datetime as dt

import pytest

from edge.ledger import fresh, repo
from edge.services.cloud import LedgerConfigSink
from tests.e2e.test_web_security import web  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(90)


async def test_prices_show_the_rule_that_sets_each_slot(web):  # noqa: F811
    db = web.rig.daemon.db
    planogram = await repo.current_planogram(db)
    doc = {
        **planogram.to_doc(),
        "pricing": {
            "version": 4,
            "rules": [{"id": "cola-deal", "kind": "promotion", "skus": ["cola"], "fixed_price": 120}],
        },
    }
    await LedgerConfigSink(db).apply_config(planogram.version + 1, doc)
    yesterday = (dt.datetime.fromtimestamp(db.clock.wall(), dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    async with db.tx() as tx:
        await fresh.set_best_before(tx, "B3", yesterday)
    s, _ = await web.login("view")
    async with s:
        page = await s.get("/prices")
        text = await page.text()
        api = await (await s.get("/api/v1/prices")).json()
    assert page.status == 200 and api["version"] == 4 and api["rules"][0]["id"] == "cola-deal"
    by_slot = {r["slot_id"]: r for r in api["slots"]}
    assert by_slot["A1"]["sku_id"] == "cola" and (by_slot["A1"]["price"], by_slot["A1"]["rule"]) == (
        120,
        "cola-deal",
    )
    assert by_slot["B3"]["price"] is None and by_slot["B3"]["rule"] == "expired"
    assert by_slot["A5"]["rule"] == "" and by_slot["A5"]["price"] == by_slot["A5"]["list_price"]
    assert 'data-rule="cola-deal"' in text and "not for sale" in text
    # the price the page shows is what the next sale charges
    order = await web.rig.daemon.machine.sell("A1", "card:page")
    assert order["total"] == by_slot["A1"]["price"]

"""A take-and-go basket settled on the review page is priced by the price rules as at the time the
customer closed the door (edge/services/review.py), not at planogram prices: the real take-and-go rig
(plant, scales, cameras, ledger), the cloud's pricing through the config sink, the technician façade
the web page calls. The promotion has ended by the time the technician decides — the basket keeps it."""

from __future__ import annotations

import asyncio

import pytest

from edge.services.cloud import LedgerConfigSink
from edge.services.queries import Queries
from edge.services.technician import Technician
from hw_sim.world import load_demo_planogram
from tests.support.review import basket_for_review
from tests.support.rigs.takeandgo import start_takeandgo_rig

pytestmark = pytest.mark.timeout(120)
PROMO_S = 6.0  # the promotion runs this long from the rule's publication (wall seconds)


async def lines(db, sid: str) -> list[tuple]:
    rows = await db.fetchall(
        "SELECT sku_id, qty, unit_price, price_rule FROM order_lines WHERE order_id=? ORDER BY line_no", (sid,)
    )
    return [tuple(r) for r in rows]


async def test_reviewed_baskets_are_priced_by_the_rules_of_their_session(tmp_path):
    rig = await start_takeandgo_rig(str(tmp_path), seed=3)
    try:
        db = rig.daemon.db
        now = db.clock.wall()
        rules = [{"id": "cola-deal", "kind": "promotion", "skus": ["cola"], "fixed_price": 120,
                  "valid_from": now - 60, "valid_until": now + PROMO_S}]
        await LedgerConfigSink(db).apply_config(2, {**load_demo_planogram(), "pricing": {"rules": rules}})
        await basket_for_review(rig, "s-approve")  # F1 (cola) taken while the shelf camera is dead
        await basket_for_review(rig, "s-correct")
        assert db.clock.wall() < now + PROMO_S, "the shopping outlasted the promotion: raise PROMO_S"
        guess = await lines(db, "s-approve")
        assert [(sku, price, rule) for sku, _, price, rule in guess] == [("cola", 180, "")]  # list, undecided
        async with asyncio.timeout(PROMO_S + 5):
            while db.clock.wall() <= now + PROMO_S:  # the technician decides after the promotion ended
                await asyncio.sleep(0.1)

        tech = Technician(rig.daemon.machine, Queries(rig.daemon.machine))
        approved = await tech.review_decide("tech-anna", "s-approve", "approve")
        assert approved["total"] == 120 and await lines(db, "s-approve") == [("cola", 1, 120, "cola-deal")]
        corrected = await tech.review_decide("tech-anna", "s-correct", "correct", {"cola": 1, "water": 2})
        assert sorted(await lines(db, "s-correct")) == [("cola", 1, 120, "cola-deal"), ("water", 2, 120, "")]
        assert corrected["total"] == 120 + 2 * 120
    finally:
        await rig.stop()

"""A meal deal in a take-and-go basket: the real daemon with cameras, scales and door (the take-and-go
rig), the cloud's pricing applied through the config sink; the order charges the bundle price and its
lines say which rule priced them. Without rules the basket is charged at list prices."""

from __future__ import annotations

import random

import pytest

from edge.services.cloud import LedgerConfigSink
from hw_sim.world import load_demo_planogram
from tests.support.rigs.takeandgo import shop, start_takeandgo_rig

pytestmark = pytest.mark.timeout(90)
DEAL = {
    "rules": [
        {
            "id": "meal-deal",
            "kind": "bundle",
            "groups": [["sandwich_ham", "sandwich_veg"], ["cola", "water"]],
            "price": 500,
        }
    ]
}


async def lines(rig, sid: str) -> list[tuple]:
    rows = await rig.daemon.db.fetchall(
        "SELECT sku_id, qty, unit_price, price_rule FROM order_lines WHERE order_id=? ORDER BY line_no",
        (sid,),
    )
    return [tuple(r) for r in rows]


# The shopper holds the items a moment before closing the door, so the shelves' scales have been
# polled after the take: this test is about pricing. (Closing within one scale poll of the take is
# decided safely — needs_review, never a wrong charge — see docs/vision.md's known limits.)
LINGER_S = 0.6


async def test_meal_deal_is_charged_in_a_basket(tmp_path):
    rig = await start_takeandgo_rig(str(tmp_path), seed=3)
    try:
        row, _ = await shop(
            rig, random.Random(0), session_id="s-list", actions=[("take", "H1"), ("take", "F1")], linger_s=LINGER_S
        )
        assert row["state"] == "charged", row
        assert sorted(await lines(rig, "s-list")) == [("cola", 1, 180, ""), ("sandwich_ham", 1, 450, "")]
        await LedgerConfigSink(rig.daemon.db).apply_config(2, {**load_demo_planogram(), "pricing": DEAL})
        row, _ = await shop(
            rig,
            random.Random(1),
            session_id="s-deal",
            actions=[("take", "H1"), ("take", "F1"), ("take", "G1")],
            linger_s=LINGER_S,
        )
        assert row["state"] == "charged", row
        got = await lines(rig, "s-deal")
        assert sum(q * p for _, q, p, _ in got) == 500 + 120  # the dearer drink goes in the deal
        assert {(sku, rule) for sku, _, _, rule in got} == {
            ("sandwich_ham", "meal-deal"),
            ("cola", "meal-deal"),
            ("water", ""),
        }
        order = await rig.daemon.db.fetchone("SELECT total_amount FROM orders WHERE order_id='s-deal'")
        assert order["total_amount"] == 620
    finally:
        await rig.stop()

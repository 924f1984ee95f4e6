"""The price rule that priced an order line travels in the cloud order record (docs/protocols/sync.md,
the `order` payload): the real sale path (VendService, vend board simulator on a pty, real SQLite)
writes the outbox record, and the sync protocol's own record check accepts it."""

from __future__ import annotations

import json

import pytest

from sync.protocol import parse_record
from tests.integration.test_pricing_sale import configure, rig  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(60)


async def order_records(rig, order_id: str) -> list[dict]:  # noqa: F811
    rows = await rig.daemon.db.fetchall(
        "SELECT record_id, seq, kind, priority, created_at, payload FROM outbox WHERE kind='order' ORDER BY seq"
    )
    out = [dict(r) | {"payload": json.loads(r["payload"])} for r in rows]
    return [r for r in out if r["payload"]["order_id"] == order_id]


async def test_the_order_record_names_the_rule_of_each_line(rig):  # noqa: F811
    now = rig.clock.wall()
    await configure(rig, 2, [{"id": "cola-deal", "kind": "promotion", "skus": ["cola"], "fixed_price": 120,
                              "valid_from": now - 60, "valid_until": now + 86400}])
    promo = await rig.daemon.machine.sell("A1", "card:promo")
    plain = await rig.daemon.machine.sell("A5", "card:water")
    for order, rule, price in ((promo, "cola-deal", 120), (plain, "", 120)):
        records = await order_records(rig, order["order_id"])
        completed = [r for r in records if r["payload"]["status"] == "completed"]
        assert len(completed) == 1
        line = completed[0]["payload"]["lines"][0]
        assert (line["unit_price"], line["price_rule"]) == (price, rule)
        assert parse_record(completed[0]).payload["lines"][0]["price_rule"] == rule  # the cloud takes it

"""Offline price rules through the real sale path: the cloud's config (validated whole), the real
VendService and vend board simulator on a pty, real SQLite. The order line records the rule; a
shown price is the price charged; expired goods are not sold; a bad pricing document is refused."""

from __future__ import annotations

import datetime as dt

import pytest

from edge.core.errors import SaleRefused
from edge.ledger import fresh, repo
from edge.services.cloud import LedgerConfigSink
from hw_sim.world import load_demo_planogram
from tests.support.rigs.fridge import start_fridge_rig
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def rig(tmp_path):
    r = await start_fridge_rig(str(tmp_path), speed=50, poll_s=0.05, restock_grace_s=0)
    await wait_for(lambda: all(d.online for d in r.plant.devices.values()))
    yield r
    await r.stop()


async def configure(rig, version: int, rules: list[dict]) -> None:
    await LedgerConfigSink(rig.daemon.db).apply_config(
        version, {**load_demo_planogram(), "pricing": {"rules": rules}}
    )


async def line(rig, order: dict) -> dict:
    row = await rig.daemon.db.fetchone(
        "SELECT unit_price, price_rule FROM order_lines WHERE order_id=?", (order["order_id"],)
    )
    return dict(row)


async def test_promotion_is_charged_and_recorded_on_the_line(rig):
    now = rig.clock.wall()
    await configure(
        rig,
        2,
        [
            {
                "id": "cola-deal",
                "kind": "promotion",
                "skus": ["cola"],
                "fixed_price": 120,
                "valid_from": now - 60,
                "valid_until": now + 86400,
            }
        ],
    )
    order = await rig.daemon.machine.sell("A1", "card:promo")
    assert order["status"] == "completed" and order["total"] == 120
    assert await line(rig, order) == {"unit_price": 120, "price_rule": "cola-deal"}
    plain = await rig.daemon.machine.sell("A5", "card:water")  # not covered: list price, no rule
    assert plain["total"] == 120 and await line(rig, plain) == {"unit_price": 120, "price_rule": ""}


async def test_a_rule_starting_mid_session_does_not_change_the_price_shown(rig):
    machine, book = rig.daemon.machine, rig.daemon.machine.vend.prices
    planogram = await repo.current_planogram(rig.daemon.db)
    shown = await book.quote("A1", planogram.sku_for_slot("A1"))
    assert shown.priced.unit_price == 180 and shown.priced.rule_id == ""
    now = rig.clock.wall()
    await configure(
        rig,
        2,
        [{"id": "flash", "kind": "promotion", "skus": ["cola"], "percent_off": 50, "valid_from": now - 1}],
    )
    order = await machine.sell("A1", "card:quoted")  # the customer pays what the display showed
    assert order["total"] == 180 and await line(rig, order) == {"unit_price": 180, "price_rule": ""}
    again = await machine.sell("A1", "card:next")  # the next customer gets the new price
    assert again["total"] == 90 and await line(rig, again) == {"unit_price": 90, "price_rule": "flash"}


async def test_near_expiry_markdown_and_expired_lane_refused(rig):
    db, machine = rig.daemon.db, rig.daemon.machine
    await configure(rig, 2, [{"id": "last-day", "kind": "near_expiry", "within_h": 24, "percent_off": 30}])
    today = dt.datetime.fromtimestamp(rig.clock.wall(), dt.UTC).date()
    async with db.tx() as tx:
        await fresh.set_best_before(tx, "B3", today.isoformat())
        await fresh.set_best_before(tx, "B4", (today - dt.timedelta(days=1)).isoformat())
    order = await machine.sell("B3", "card:bb")
    assert order["total"] == 105 and await line(rig, order) == {"unit_price": 105, "price_rule": "last-day"}
    vends = rig.board_sim.counters["vends"]
    with pytest.raises(SaleRefused) as refused:
        await machine.sell("B4", "card:old")
    assert refused.value.reason == "expired" and rig.board_sim.counters["vends"] == vends


async def test_an_invalid_pricing_document_rejects_the_config_and_keeps_the_rules(rig):
    await configure(rig, 2, [{"id": "ok", "kind": "promotion", "skus": ["water"], "fixed_price": 100}])
    with pytest.raises(ValueError):
        await configure(rig, 3, [{"id": "bad", "kind": "promotion", "percent_off": 500}])
    order = await rig.daemon.machine.sell("A5", "card:still")
    assert order["total"] == 100 and (await repo.current_planogram(rig.daemon.db)).version == 2

"""The card reader through the daemon's own wiring ([payment] method = "mdb"): the vend service asks the
payment port, with the price it will charge (price rules and shown quotes included), and refuses before
the card is asked when the sale cannot happen. Simulated reader and board on ptys, real SQLite."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from edge.core.errors import SaleRefused
from edge.ledger import fresh, payments, repo
from edge.services.cloud import LedgerConfigSink
from hw_sim.mdb_reader import SimMdbReader
from hw_sim.world import load_demo_planogram
from tests.support.rigs.vend import start_rig
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def shop(tmp_path):
    reader = SimMdbReader(approve_delay_s=0.02)
    link = await reader.serve_pty(str(tmp_path / "ttyMDB"))
    extra = f'[payment]\nmethod = "mdb"\nport = "{link}"\ncard_wait_s = 2\napproval_timeout_s = 1\n'
    rig = await start_rig(str(tmp_path), speed=200.0, extra=extra)
    pay = rig.daemon.machine.services.payment
    async with asyncio.timeout(10):  # the supervised payment loop sets the reader up
        while not pay.reader.ready:
            await asyncio.sleep(0.02)
    yield rig, reader
    await rig.stop()
    await reader.stop()


async def rows(rig) -> list[dict]:
    return [dict(r) for r in await rig.daemon.db.fetchall("SELECT * FROM payment_sessions ORDER BY seq")]


async def test_the_card_pays_the_rule_price_the_order_records(shop):
    rig, reader = shop
    now = rig.daemon.clock.wall()
    rule = {
        "id": "cola-deal",
        "kind": "promotion",
        "skus": ["cola"],
        "fixed_price": 120,
        "valid_from": now - 60,
    }
    await LedgerConfigSink(rig.daemon.db).apply_config(
        2, {**load_demo_planogram(), "pricing": {"rules": [rule]}}
    )
    reader.tap()
    order = await rig.daemon.machine.sell("A1")
    assert order["status"] == "completed" and order["total"] == 120
    assert reader.books.captured == [(101, 120)]
    [p] = await rows(rig)
    assert (p["state"], p["amount"], order["payment_ref"]) == ("captured", 120, f"mdb:{p['payment_id']}")


async def test_a_shown_quote_is_what_the_card_pays(shop):
    rig, reader = shop
    book = rig.daemon.machine.vend.prices
    planogram = await repo.current_planogram(rig.daemon.db)
    shown = await book.quote("A1", planogram.sku_for_slot("A1"))
    now = rig.daemon.clock.wall()
    rule = {"id": "flash", "kind": "promotion", "skus": ["cola"], "percent_off": 50, "valid_from": now - 1}
    await LedgerConfigSink(rig.daemon.db).apply_config(
        2, {**load_demo_planogram(), "pricing": {"rules": [rule]}}
    )
    reader.tap()
    order = await rig.daemon.machine.sell("A1")
    assert order["total"] == shown.priced.unit_price == 180 and reader.books.captured == [(101, 180)]


async def test_refused_before_the_card_is_asked(shop):
    rig, reader = shop
    today = dt.datetime.fromtimestamp(rig.daemon.clock.wall(), dt.UTC).date()
    async with rig.daemon.db.tx() as tx:
        await fresh.set_best_before(tx, "B4", (today - dt.timedelta(days=1)).isoformat())
    await rig.daemon.machine.restock("C1", 0, actor="test")
    reader.tap()
    for slot, reason in (("C1", "sold_out"), ("Z9", "unknown_slot"), ("B4", "expired")):
        with pytest.raises(SaleRefused) as exc:
            await rig.daemon.machine.sell(slot)
        assert exc.value.reason == reason
    assert await rows(rig) == [] and reader.books.approved == [] and rig.sim.vend_frames_received == 0


async def test_cash_and_test_vends_do_not_touch_the_card(shop):
    rig, reader = shop
    cash = await rig.daemon.machine.sell("E6", "cash:coins-1")
    test = await rig.daemon.machine.test_vend("E5", actor="tech")
    assert cash["status"] == test["status"] == "completed"
    assert await rows(rig) == [] and reader.books.approved == []
    assert reader.books.cash_sales == [(506, cash["total"])]  # reported for the reader's audit
    assert (await payments.payment_totals(rig.daemon.db, "mdb")) == {}


@pytest.fixture
async def slow_shop(tmp_path):
    """As ``shop``, with a board whose motor takes 0.6 s (time to pull a cable while it turns)."""
    reader = SimMdbReader(approve_delay_s=0.02)
    link = await reader.serve_pty(str(tmp_path / "ttyMDB"))
    extra = f'[payment]\nmethod = "mdb"\nport = "{link}"\ncard_wait_s = 2\napproval_timeout_s = 1\nreply_timeout_s = 0.3\n'
    rig = await start_rig(str(tmp_path), speed=2.0, extra=extra)
    pay = rig.daemon.machine.services.payment
    async with asyncio.timeout(10):
        while not pay.reader.ready:
            await asyncio.sleep(0.02)
    yield rig, reader, pay
    await rig.stop()
    await reader.stop()


async def until(predicate, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_adapter_unplugged_while_the_motor_runs_is_captured_after_replug(slow_shop):
    rig, reader, pay = slow_shop
    reader.tap()
    sale = asyncio.create_task(rig.daemon.machine.sell("A1"))
    async with asyncio.timeout(10):
        while rig.sim.vend_frames_received == 0:  # approved, recorded, the motor turns
            await asyncio.sleep(0.01)
    await reader.unplug()
    order = await sale
    assert order["status"] == "completed" and rig.sim.dispensed["A1"] == 1
    [p] = await rows(rig)
    assert p["state"] == "capturing" and reader.books.captured == []  # VEND SUCCESS could not leave
    with pytest.raises(SaleRefused):  # no new card sale while a payment is open
        reader.tap()
        await rig.daemon.machine.sell("A2")
    await reader.replug()

    async def captured() -> bool:
        return [r["state"] for r in await rows(rig)] == ["captured"]

    await until(captured)  # the daemon's payment loop finished it once the adapter was back
    assert reader.books.captured == [(101, 180)] and reader.books.open == 0
    assert (await payments.disagreements(rig.daemon.db, "mdb")) == {
        "captured_without_drop": [],
        "dropped_without_approval": [],
        "mispriced": [],
    }


async def test_adapter_unplugged_before_the_approval_arrives_never_vends(slow_shop):
    rig, reader, pay = slow_shop
    reader.approve_delay_s = 0.5
    reader.tap()
    sale = asyncio.create_task(rig.daemon.machine.sell("B1"))
    async with asyncio.timeout(10):
        while not any(line.startswith("R,13,00") for line in reader.log):  # the VEND REQUEST is out
            await asyncio.sleep(0.01)
    await reader.unplug()
    with pytest.raises(SaleRefused):
        await sale
    await wait_for(lambda: reader.books.approved, 5.0, what="the reader to approve while the cable is out")
    await reader.replug()

    async def closed() -> bool:
        return all(r["state"] not in payments.OPEN_STATES for r in await rows(rig))

    await until(closed)
    assert rig.sim.vend_frames_received == 0 and reader.books.captured == []
    assert reader.books.open == 0 and [r["state"] for r in await rows(rig)] in (["refunded"], ["cancelled"])

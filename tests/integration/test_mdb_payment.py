"""MDB card payment at the wire: the simulated reader behind its adapter on a pty, the real driver,
the payment service, the vend flow against the simulated board, and a real SQLite ledger.

Each sale goes the way the vend flow's hook does (see docs/protocols/mdb.md, "Sale flow"):
authorize → vend with ``payment_ref = auth.ref`` → settle with the drop sensor's verdict.
"""

from __future__ import annotations

import asyncio

import pytest

from drivers.mdb import CashlessReader, ReaderState
from edge.core.errors import SaleRefused
from edge.ledger import payments, repo
from edge.services.payment_mdb import MdbPayment, MdbPaymentConfig
from hw_sim.mdb_reader import SimMdbReader
from tests.support.rigs.vend import start_rig
from tests.support.waits import wait_for

PRICE = {"A1": 180}


@pytest.fixture
async def rig(tmp_path):
    r = await start_rig(str(tmp_path), speed=200.0)
    yield r
    await r.stop()


@pytest.fixture
async def card(rig, request):
    opts = getattr(request, "param", {})
    sim = SimMdbReader(**opts)
    link = await sim.serve_pty(str(rig.state_dir / "ttyMDB"))
    reader = CashlessReader(link, poll_interval_s=0.02, reply_timeout_s=0.3)
    await reader.start()
    await reader.wait_connected(5)
    pay = MdbPayment(
        rig.daemon.db, reader, MdbPaymentConfig(card_wait_s=2, approval_timeout_s=1, step_timeout_s=2)
    )
    assert await pay.recover() == 0  # what the daemon does at start: close leftovers, set the reader up
    assert reader.ready
    yield sim, reader, pay
    await reader.stop()
    await sim.stop()


async def price_of(rig, slot):
    sku = (await repo.current_planogram(rig.daemon.db)).sku_for_slot(slot)
    return sku.price.amount, sku.price.currency


async def paid_sale(rig, pay, sim, slot, *, tap=True):
    """The vend flow's hook: authorize, vend, settle from the drop sensor's verdict."""
    amount, currency = await price_of(rig, slot)
    if tap:
        sim.tap()
    auth = await pay.authorize(slot, amount, currency)
    order = await rig.daemon.machine.sell(slot, auth.ref)
    dispensed = {"completed": True, "failed": False}.get(order["status"])
    state = await pay.settle(auth, dispensed)
    return auth, order, state


async def test_approve_drop_success_captures_once(rig, card):
    sim, reader, pay = card
    auth, order, state = await paid_sale(rig, pay, sim, "A1")
    assert order["status"] == "completed" and state == "captured"
    assert rig.sim.dispensed["A1"] == 1
    assert sim.books.captured == [(101, auth.amount)] and sim.books.open == 0
    row = await payments.payment(rig.daemon.db, auth.payment_id)
    assert row.state == "captured" and order["payment_ref"] == f"mdb:{auth.payment_id}"
    assert reader.state is ReaderState.ENABLED  # session completed, END SESSION seen


async def test_jam_fails_vend_and_reader_refunds(rig, card):
    sim, _, pay = card
    rig.sim.jam("B2")
    auth, order, state = await paid_sale(rig, pay, sim, "B2")
    assert order["status"] == "failed" and state == "refunded"
    assert rig.sim.total_dispensed == 0
    assert sim.books.refunded == [(202, auth.amount)] and sim.books.captured == []


async def test_denied_card_never_reaches_the_board(rig, card):
    sim, _, pay = card
    sim.script("deny")
    sim.tap()
    amount, currency = await price_of(rig, "A2")
    with pytest.raises(SaleRefused) as exc:
        await pay.authorize("A2", amount, currency)
    assert exc.value.reason == "payment_denied"
    assert rig.sim.vend_frames_received == 0 and rig.sim.total_dispensed == 0
    assert (await payments.payment_totals(rig.daemon.db, "mdb")) == {"denied": 1, "denied_amount": amount}
    assert sim.books.denied == 1 and sim.books.approved == []


async def test_no_decision_in_time_is_cancelled_without_vending(rig, card):
    sim, _, pay = card
    sim.script("timeout")
    sim.tap()
    with pytest.raises(SaleRefused) as exc:
        await pay.authorize("A3", *await price_of(rig, "A3"))
    assert exc.value.reason == "payment_timeout"
    assert rig.sim.vend_frames_received == 0
    assert (await payments.payment_totals(rig.daemon.db, "mdb")).get("cancelled") == 1
    assert sim.books.approved == [] and sim.books.denied == 1  # VEND CANCEL answered VEND DENIED


async def test_slow_approval_within_the_timeout_still_sells(rig, card):
    sim, _, pay = card
    sim.approve_delay_s = 0.6  # the approval timeout is 1 s
    _, order, state = await paid_sale(rig, pay, sim, "C1")
    assert order["status"] == "completed" and state == "captured"


async def test_approval_after_the_cancel_is_refunded_and_nothing_vends(rig, card):
    sim, _, pay = card
    sim.approve_delay_s = 1.05  # lands between our timeout (1 s) and the cancel
    sim.tap()
    with pytest.raises(SaleRefused):
        await pay.authorize("C2", *await price_of(rig, "C2"))
    assert rig.sim.vend_frames_received == 0
    assert sim.books.open == 0 and sim.books.captured == []
    totals = await payments.payment_totals(rig.daemon.db, "mdb")
    assert totals.get("refunded", 0) + totals.get("cancelled", 0) == 1


async def test_reader_reset_mid_vend_voids_the_payment_and_never_captures(rig, card):
    sim, reader, pay = card
    sim.reset_after_approval_s = 0.01  # reboots while the motor runs
    auth, order, state = await paid_sale(rig, pay, sim, "D4")
    assert order["status"] == "completed" and rig.sim.dispensed["D4"] == 1  # the approval was recorded first
    assert state == "voided" and sim.books.captured == [] and sim.books.voided == [(404, auth.amount)]
    assert "reset" in reader.last_error
    # the next customer gets a re-initialised reader
    sim.reset_after_approval_s = None
    _, order2, state2 = await paid_sale(rig, pay, sim, "D5")
    assert state2 == "captured" and order2["status"] == "completed"


async def test_reader_reset_before_approval_refuses_the_sale(rig, card):
    sim, _, pay = card
    sim.script("timeout")
    sim.tap()
    amount, currency = await price_of(rig, "E1")
    task = asyncio.create_task(pay.authorize("E1", amount, currency))
    # the reset comes while the VEND REQUEST waits for a decision
    await wait_for(lambda: any(line.startswith("R,13,00") for line in sim.log), 5.0, what="the VEND REQUEST")
    sim.reset_now()
    with pytest.raises(SaleRefused) as exc:
        await task
    assert exc.value.reason == "reader_reset"
    assert rig.sim.vend_frames_received == 0
    assert (await payments.payment_totals(rig.daemon.db, "mdb")).get("voided") == 1


async def test_no_card_presented_refuses_the_sale(rig, card):
    _, _, pay = card
    with pytest.raises(SaleRefused) as exc:
        await pay.authorize("A1", *await price_of(rig, "A1"))
    assert exc.value.reason == "no_card"
    assert await payments.payment_totals(rig.daemon.db, "mdb") == {}


@pytest.mark.parametrize("card", [{"level": 3, "always_idle": True}], indirect=True)
async def test_level3_always_idle_sells_without_a_card_first(rig, card):
    sim, reader, pay = card
    _, order, state = await paid_sale(rig, pay, sim, "B1", tap=False)
    assert reader.always_idle and reader.level == 3
    assert order["status"] == "completed" and state == "captured"
    assert "R,17,0400000020" in sim.log  # the VMC enabled the always-idle feature


async def test_unknown_drop_waits_for_the_journal_and_never_captures_without_a_drop(rig, card):
    sim, _, pay = card
    sim.tap()
    auth = await pay.authorize("A4", *await price_of(rig, "A4"))
    assert await pay.settle(auth, None) == "approved"  # the vend journal does not know yet
    assert sim.books.open == 1
    assert await pay.recover() == 0  # no vend with this payment's ref: nothing fell
    row = await payments.payment(rig.daemon.db, auth.payment_id)
    assert row.state == "refunded" and row.error == "not_dispensed"
    assert sim.books.captured == [] and sim.books.refunded == [(104, auth.amount)]


async def test_cash_sale_is_reported_to_the_reader(rig, card):
    sim, _, pay = card
    sim.tap()  # any state past set-up takes a cash sale
    await pay.report_cash_sale("E6", 150, "EUR")
    assert sim.books.cash_sales == [(506, 150)]


async def test_technician_status_shows_state_and_last_error(rig, card):
    sim, _, pay = card
    assert pay.status()["state"] == "enabled" and pay.status()["model"] == "sim-reader"
    sim.silence(10_000)
    await wait_for(lambda: pay.status()["state"] == "offline", 5.0, what="the reader to go offline")
    assert "silent" in pay.status()["last_error"]


async def test_the_ledger_check_finds_a_capture_without_a_drop(rig, card):
    sim, _, pay = card
    rig.sim.jam("C5")
    auth, order, state = await paid_sale(rig, pay, sim, "C5")
    _, ok_order, _ = await paid_sale(rig, pay, sim, "C6")
    db = rig.daemon.db
    assert await payments.disagreements(db, "mdb") == {
        "captured_without_drop": [],
        "dropped_without_approval": [],
        "mispriced": [],
    }
    async with db.tx() as tx:  # what the rules forbid, written by hand: the checker must see both
        await tx.execute(
            "UPDATE payment_sessions SET state='captured' WHERE payment_id=?", (auth.payment_id,)
        )
        await tx.execute(
            "UPDATE payment_sessions SET state='refunded', amount=1 WHERE payment_id=?",
            (ok_order["payment_ref"].split(":")[1],),
        )
    broken = await payments.disagreements(db, "mdb")
    assert broken["captured_without_drop"] == [auth.payment_id]
    assert broken["dropped_without_approval"] == [ok_order["order_id"]]
    assert broken["mispriced"] == [ok_order["payment_ref"].split(":")[1]]


async def test_reader_reset_around_a_capture_in_flight_is_capture_unknown_and_alarmed(rig, card):
    sim, _, pay = card
    auth, order, state = await paid_sale(rig, pay, sim, "D1")
    assert state == "captured"
    db = rig.daemon.db
    async with db.tx() as tx:  # as a restart finds it: VEND SUCCESS may or may not have reached the reader
        await tx.execute(
            "UPDATE payment_sessions SET state='capturing' WHERE payment_id=?", (auth.payment_id,)
        )
    sim.reset_now()  # ... and the reader restarted meanwhile: nobody on the machine can tell
    assert await pay.recover() == 0
    row = await payments.payment(db, auth.payment_id)
    assert row.state == "capture_unknown"
    keys = {a["alarm_key"] for a in await repo.active_alarms(db)}
    assert f"payment_capture_unknown:{auth.payment_id}" in keys
    assert sim.books.captured == [(401, auth.amount)]  # the reader's books still say captured once

"""Scenario `classic-vend --payment mdb`: the classic sale paid by card through a simulated MDB reader.

Customers present a card (or pay cash now and then) and buy from the spirals while the board meets
its usual faults and the reader its own: declined cards, slow approvals, a reader that never
decides, a reader that reboots while the motor runs. At the end the ledger, the reader's books and
the board must tell one story: every capture is a completed vend, every refund a failed one,
nothing left open (``mismatches`` counts every disagreement).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from edge.core.errors import SaleRefused
from edge.demo.classic import _inject_fault, _settle, summarize
from edge.demo.setup import DemoRig, start_rig
from edge.ledger import payments
from edge.services.payment_mdb import METHOD, MdbPayment
from hw_sim.mdb_reader import SimMdbReader

APPROVE_S = 0.02


async def classic_vend_mdb(state_dir: str, *, customers: int = 30, seed: int = 1) -> dict[str, Any]:
    reader = SimMdbReader(approve_delay_s=APPROVE_S)
    link = await reader.serve_pty(f"{state_dir}/ttyMDB")
    extra = f'[payment]\nmethod = "mdb"\nport = "{link}"\ncard_wait_s = 2\napproval_timeout_s = 1\n'
    rig = await start_rig(state_dir, seed=seed, extra=extra)
    rng = random.Random(seed)
    refused: Counter[str] = Counter()
    machine = rig.daemon.machine
    assert machine is not None
    pay = machine.services.payment
    assert isinstance(pay, MdbPayment)
    slots = sorted(rig.sim.stock)
    cash = 0
    try:
        await _ready(pay)
        for i in range(customers):
            slot = rng.choice(slots)
            _inject_fault(rig, rng, slot, i)
            by_cash = _card_fault(reader, rng)
            cash += by_cash
            try:
                order = await machine.sell(slot, payment_ref=f"cash:demo-{i}" if by_cash else "")
                if order["status"] == "pending":
                    await _settle(rig, slot)
                    await _closed(pay, machine.vend)  # the reader stays in its vend until the payment closes
            except SaleRefused as exc:
                refused[exc.reason] += 1
                if exc.reason in ("slot_disabled", "sold_out"):
                    filled = await machine.restock(slot, None, actor="demo-technician")
                    rig.sim.stock[slot] = filled[slot]
                await _ready(pay)
        await _settle(rig, "")  # the last customer's vend, if the board left it open
        await _closed(pay, machine.vend)
        summary = await summarize(rig, refused)
        summary.update(await _card_summary(rig, pay, reader), cash_sales=cash, scenario="classic-vend-mdb")
        summary["mismatches"] += summary.pop("card_mismatches")
        return summary
    finally:
        await rig.stop()
        await reader.stop()


def _card_fault(reader: SimMdbReader, rng: random.Random) -> bool:
    """Set up this customer's card: True when they pay cash instead (the reader is told afterwards)."""
    reader.approve_delay_s, reader.reset_after_approval_s = APPROVE_S, None
    roll = rng.random()
    if roll < 0.08:
        return True
    if roll < 0.16:
        reader.script("deny")
    elif roll < 0.20:
        reader.approve_delay_s = 0.6  # slow, but inside the 1 s approval timeout
    elif roll < 0.24:
        reader.script("timeout")  # the reader never decides: cancelled, nothing dispensed
    elif roll < 0.28:
        reader.reset_after_approval_s = 0.005  # reboots while the motor runs: nothing captured
    if not reader.always_idle:
        reader.tap()
    return False


async def _ready(pay: MdbPayment) -> None:
    """The payment loop sets the reader up (at start, after a reset); wait for it like a customer would."""
    async with asyncio.timeout(15):
        while not pay.reader.ready:
            await asyncio.sleep(0.02)


async def _closed(pay: MdbPayment, vend: Any) -> None:
    """Every payment closed (the supervised payment loop finishes what a pending vend left)."""
    async with asyncio.timeout(30):
        while await payments.open_payments(pay.db, METHOD) or vend.unreconciled:
            await asyncio.sleep(0.05)


async def _card_summary(rig: DemoRig, pay: MdbPayment, reader: SimMdbReader) -> dict[str, Any]:
    db = rig.daemon.db
    assert db is not None
    totals = await payments.payment_totals(db, METHOD)
    books = reader.books
    broken = await payments.disagreements(db, METHOD)  # the two rules, and the amount the card paid
    captured_amount = totals.get("captured_amount", 0)
    mismatches = sum(map(len, broken.values())) + books.open + len(await payments.open_payments(db, METHOD))
    mismatches += totals.get("captured", 0) != len(books.captured)
    mismatches += captured_amount != sum(
        a for _, a in books.captured
    )  # scale 1, 2 decimals: cents on the bus
    mismatches += totals.get("refunded", 0) != len(books.refunded)
    return {
        "card_captured_total": captured_amount,
        "card_captured": totals.get("captured", 0),
        "card_refunded_total": totals.get("refunded_amount", 0),
        "card_refunded": totals.get("refunded", 0),
        "card_denied": totals.get("denied", 0),
        "card_cancelled": totals.get("cancelled", 0),
        "card_voided": totals.get("voided", 0),
        "reader_resets": pay.reader.counters["resets_seen"],
        "reader_cash_sales": len(books.cash_sales),
        "card_mismatches": mismatches,
    }

"""Scenario `classic-vend`: scripted customers buy from spiral slots while faults are injected.

Faults a real machine meets: jams, items that hang, line noise, a deaf board, and brown-outs that
reset the board at any instant of a vend (issue 12). A vend the board cannot account for after a
reset goes to ``needs_count``; the demo technician then counts the slot (the simulator's true stock)
and the count settles it, as a person at the machine would.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from edge.core.errors import SaleRefused
from edge.demo.setup import DemoRig, start_rig
from edge.ledger import repo
from hw_sim.vend_board import BROWNOUT_POINTS


async def classic_vend(state_dir: str, *, customers: int = 40, seed: int = 1) -> dict[str, Any]:
    rig = await start_rig(state_dir, seed=seed)
    rng = random.Random(seed)
    refused: Counter[str] = Counter()
    machine = rig.daemon.machine
    assert machine is not None
    slots = sorted(rig.sim.stock)
    try:
        for i in range(customers):
            slot = rng.choice(slots)
            _inject_fault(rig, rng, slot, i)
            try:
                order = await machine.sell(slot, payment_ref=f"card:demo-{i}")
                if order["status"] == "pending":  # outcome unknown (the board reset): reconcile, maybe count
                    await _settle(rig, slot)
            except SaleRefused as exc:
                refused[exc.reason] += 1
                if exc.reason in ("slot_disabled", "sold_out"):
                    # the technician clears the slot and loads it: the ledger and the spiral both fill up
                    filled = await machine.restock(slot, None, actor="demo-technician")
                    rig.sim.stock[slot] = filled[slot]
        return await summarize(rig, refused)
    finally:
        await rig.stop()


async def _settle(rig: DemoRig, slot: str) -> None:
    """Wait for the reconciler; a vend it sends to needs_count is settled by counting the slot."""
    machine = rig.daemon.machine
    assert machine is not None
    async with asyncio.timeout(30):
        while machine.vend.unreconciled:
            await asyncio.sleep(0.05)
    for pending in await machine.vends_needing_count():
        await machine.settle_count(pending["order_id"], rig.sim.stock[pending["slot_id"]], "demo-technician")


def _inject_fault(rig: DemoRig, rng: random.Random, slot: str, i: int) -> None:
    """About one customer in five meets a fault a real machine has: jam, no drop, line noise,
    silence, or a brown-out that resets the board somewhere in the vend."""
    roll = rng.random()
    if roll >= 0.9:
        rig.sim.brownout(rng.choice(BROWNOUT_POINTS), deaf_s=rng.choice((0.8, 3.0)))
        if rng.random() < 0.5:
            rig.sim.lose_vend_done()  # so a 'during_result' reset has a VEND_RESULT to strike
        return
    if roll < 0.05:
        rig.sim.jam(slot)
    elif roll < 0.09:
        rig.sim.no_drop(slot)
    elif roll < 0.13:
        rig.sim.garble(1)
    elif roll < 0.16:
        rig.sim.silence(1)


async def summarize(rig: DemoRig, refused: Counter[str]) -> dict[str, Any]:
    """Compare ledger and simulator slot by slot; every disagreement is a mismatch."""
    db = rig.daemon.db
    assert db is not None
    rows = await db.fetchall("SELECT o.status, o.refund_due, l.slot_id FROM orders o "
                             "JOIN order_lines l USING(order_id) WHERE o.kind IN ('vend','test_vend')")
    counted = await db.fetchall("SELECT outcome FROM vend_journal WHERE settled_by IS NOT NULL")
    completed = Counter(r["slot_id"] for r in rows if r["status"] == "completed")
    failed = sum(1 for r in rows if r["status"] == "failed")
    stock = await repo.stock(db)
    mismatches = sum(1 for s in rig.sim.stock if completed[s] != rig.sim.dispensed.get(s, 0))
    mismatches += sum(1 for s, n in rig.sim.stock.items() if stock[s].count != n)
    return {
        "scenario": "classic-vend",
        "orders_completed": sum(completed.values()),
        "orders_failed": failed,
        "refunds_due": sum(1 for r in rows if r["refund_due"]),
        "sales_refused": dict(refused),
        "sim_dispensed": rig.sim.total_dispensed,
        "pending": sum(1 for r in rows if r["status"] == "pending"),
        "board_resets": rig.sim.counters["resets"],
        "needs_count": len(counted),  # vends the board could not account for, settled by a count
        "needs_count_fell": sum(1 for r in counted if r["outcome"] == "ok"),
        "needs_count_open": sum(1 for r in rows if r["status"] == "needs_count"),
        "mismatches": mismatches,
        "integrity_ok": await db.integrity_ok(),
    }

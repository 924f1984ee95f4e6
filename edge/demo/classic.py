"""Scenario `classic-vend`: scripted customers buy from spiral slots while faults are injected."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from edge.core.errors import SaleRefused
from edge.demo.setup import DemoRig, start_rig
from edge.ledger import repo


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
                await machine.sell(slot, payment_ref=f"card:demo-{i}")
            except SaleRefused as exc:
                refused[exc.reason] += 1
                if exc.reason in ("slot_disabled", "sold_out"):
                    # the technician clears the slot and loads it: the ledger and the spiral both fill up
                    filled = await machine.restock(slot, None, actor="demo-technician")
                    rig.sim.stock[slot] = filled[slot]
        return await summarize(rig, refused)
    finally:
        await rig.stop()


def _inject_fault(rig: DemoRig, rng: random.Random, slot: str, i: int) -> None:
    """About one customer in six meets a fault a real machine has: jam, no drop, line noise, silence."""
    roll = rng.random()
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
        "mismatches": mismatches,
        "integrity_ok": await db.integrity_ok(),
    }

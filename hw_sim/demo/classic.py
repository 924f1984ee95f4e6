"""Scenario `classic-vend`: scripted customers buy from spiral slots through the kiosk API while faults
are injected in the simulated board.

Faults a real machine meets: jams, items that hang, line noise, a deaf board, and brown-outs that
reset the board at any instant of a vend (issue 12). A vend the board cannot account for after a
reset goes to ``needs_count``; the demo technician then counts the slot (the simulator's true stock)
through the API and the count settles it, as a person at the machine would.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hw_sim.rigs.api import SaleRefused, poll
from hw_sim.rigs.machine import ProcessRig, start_machine
from hw_sim.vend_board import BROWNOUT_POINTS, SimVendBoard


async def classic_vend(state_dir: str, *, customers: int = 40, seed: int = 1) -> dict[str, Any]:
    rig = await start_machine(state_dir, seed=seed)
    try:
        refused = await Customers(rig, random.Random(seed)).serve(customers)
        return await summarize(rig, refused)
    finally:
        await rig.stop()


class Customers:
    """Customers buying random spiral slots, a board fault drawn before each sale. Subclasses change
    how they pay (`payment_ref`) and what they wait for after a pending or refused sale."""

    def __init__(self, rig: ProcessRig, rng: random.Random) -> None:
        self.rig, self.rng = rig, rng
        self.refused: Counter[str] = Counter()

    async def payment_ref(self, i: int) -> str:
        return f"card:demo-{i}"

    async def after_pending(self) -> None:
        """A vend came back pending: the reconciler settles it, a count if the board cannot tell."""
        await settle(self.rig)

    async def after_refused(self) -> None:
        return None

    async def serve(self, customers: int) -> Counter[str]:
        rig = self.rig
        slots = sorted(rig.board.stock)
        for i in range(customers):
            slot = self.rng.choice(slots)
            inject_fault(rig.board, self.rng, slot)
            ref = await self.payment_ref(i)
            try:
                order = await rig.kiosk.sell(slot, ref)
                if order["status"] == "pending":  # outcome unknown (the board reset)
                    await self.after_pending()
            except SaleRefused as exc:
                self.refused[exc.error] += 1
                if exc.error in ("slot_disabled", "sold_out"):
                    # the technician loads the spiral and confirms on the machine: both fill up
                    filled = await rig.tech.restock(slot)
                    rig.board.stock[slot] = filled[slot]
                await self.after_refused()
        return self.refused


async def settle(rig: ProcessRig, timeout_s: float = 30.0) -> None:
    """Wait for the reconciler; a vend it leaves waiting for a count is settled by counting the slot."""
    async def reconciled() -> bool:
        return int((await rig.tech.audit())["vends"]["unreconciled"]) == 0

    await poll(reconciled, timeout_s, what="vends reconciled")
    for pending in (await rig.tech.audit())["vends"]["needs_count"]:
        await rig.tech.count(pending["order_id"], rig.board.stock[pending["slot_id"]])


def inject_fault(board: SimVendBoard, rng: random.Random, slot: str) -> None:
    """About one customer in five meets a fault a real machine has: jam, no drop, line noise,
    silence, or a brown-out that resets the board somewhere in the vend."""
    roll = rng.random()
    if roll >= 0.9:
        board.brownout(rng.choice(BROWNOUT_POINTS), deaf_s=rng.choice((0.8, 3.0)))
        if rng.random() < 0.5:
            board.lose_vend_done()  # so a 'during_result' reset has a VEND_RESULT to strike
        return
    if roll < 0.05:
        board.jam(slot)
    elif roll < 0.09:
        board.no_drop(slot)
    elif roll < 0.13:
        board.garble(1)
    elif roll < 0.16:
        board.silence(1)


async def summarize(rig: ProcessRig, refused: Counter[str]) -> dict[str, Any]:
    """Compare the daemon's audit read model with the simulator slot by slot; every disagreement is a
    mismatch."""
    audit = await rig.tech.audit()
    orders, vends, stock = audit["orders"], audit["vends"], audit["stock"]
    by_status, completed = orders["by_status"], orders["completed_by_slot"]
    sim = rig.board
    mismatches = sum(1 for s in sim.stock if completed.get(s, 0) != sim.dispensed.get(s, 0))
    mismatches += sum(1 for s, n in sim.stock.items() if stock.get(s) != n)
    return {
        "scenario": "classic-vend",
        "orders_completed": sum(completed.values()),
        "orders_failed": by_status.get("failed", 0),
        "refunds_due": orders["refunds_due"],
        "sales_refused": dict(refused),
        "sim_dispensed": sim.total_dispensed,
        "pending": by_status.get("pending", 0),
        "board_resets": sim.counters["resets"],
        "needs_count": vends["counted"],  # vends the board could not account for, settled by a count
        "needs_count_fell": vends["counted_fell"],
        "needs_count_open": by_status.get("needs_count", 0),
        "mismatches": mismatches,
        "integrity_ok": audit["integrity_ok"],
    }

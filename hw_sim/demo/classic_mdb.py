"""Scenario `classic-vend --payment mdb`: the classic sale paid by card through a simulated MDB reader.

Customers present a card (or pay cash now and then) and buy from the spirals while the board meets
its usual faults and the reader its own: declined cards, slow approvals, a reader that never
decides, a reader that reboots while the motor runs. The kiosk sale sends no payment_ref, so the
daemon's MDB payment takes the card. At the end the daemon's ledger (its audit read model), the
reader's books and the board must tell one story: every capture is a completed vend, every refund a
failed one, nothing left open (``mismatches`` counts every disagreement).
"""

from __future__ import annotations

import random
from typing import Any

from hw_sim.demo.classic import Customers, summarize
from hw_sim.mdb_reader import SimMdbReader, State
from hw_sim.rigs.api import poll
from hw_sim.rigs.machine import ProcessRig, start_machine

APPROVE_S = 0.02
READY = (State.ENABLED, State.SESSION_IDLE)  # set up and enabled (or in a session): a sale may start


async def classic_vend_mdb(state_dir: str, *, customers: int = 30, seed: int = 1) -> dict[str, Any]:
    reader = SimMdbReader(approve_delay_s=APPROVE_S)
    link = await reader.serve_pty(f"{state_dir}/ttyMDB")
    extra = f'[payment]\nmethod = "mdb"\nport = "{link}"\ncard_wait_s = 2\napproval_timeout_s = 1\n'
    rig = await start_machine(state_dir, seed=seed, extra=extra, closers=[reader.stop])
    try:
        card = CardCustomers(rig, random.Random(seed), reader)
        await card.ready()
        refused = await card.serve(customers)
        await card.after_pending()  # the last customer's vend, if the board left it open
        summary = await summarize(rig, refused)
        summary.update(await card_summary(rig, reader), cash_sales=card.cash, scenario="classic-vend-mdb")
        summary["mismatches"] += summary.pop("card_mismatches")
        return summary
    finally:
        await rig.stop()


class CardCustomers(Customers):
    """Customers who tap a card at the reader (a scripted card fault each), or pay cash."""

    def __init__(self, rig: ProcessRig, rng: random.Random, reader: SimMdbReader) -> None:
        super().__init__(rig, rng)
        self.reader = reader
        self.cash = 0

    async def payment_ref(self, i: int) -> str:
        by_cash = card_fault(self.reader, self.rng)
        self.cash += by_cash
        return f"cash:demo-{i}" if by_cash else ""  # "": the configured payment device takes the card

    async def after_pending(self) -> None:
        await super().after_pending()
        await self.closed()  # the reader stays in its vend until the payment closes

    async def after_refused(self) -> None:
        await self.ready()

    async def ready(self) -> None:
        """The daemon's payment loop sets the reader up (at start, after a reset); wait for it like a
        customer would, at the reader."""
        async def enabled() -> bool:
            return self.reader.state in READY

        await poll(enabled, 15.0, every_s=0.02, what="MDB reader enabled")

    async def closed(self) -> None:
        """Every payment closed and every vend reconciled (the daemon's payment loop finishes what a
        pending vend left)."""
        async def done() -> bool:
            audit = await self.rig.tech.audit()
            return not audit["vends"]["unreconciled"] and not _mdb(audit).get("open", 0)

        await poll(done, 30.0, what="payments closed")


def card_fault(reader: SimMdbReader, rng: random.Random) -> bool:
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


def _mdb(audit: dict[str, Any]) -> dict[str, Any]:
    payments: dict[str, Any] = audit.get("payments", {}).get("mdb", {})
    return payments


async def card_summary(rig: ProcessRig, reader: SimMdbReader) -> dict[str, Any]:
    """The daemon's card payments (audit) against the reader's books; `card_mismatches` counts every
    disagreement (amounts: scale 1, 2 decimals, so cents on the bus are the ledger's minor units)."""
    totals = _mdb(await rig.tech.audit())
    books = reader.books
    captured_amount = totals.get("captured_amount", 0)
    mismatches = totals.get("disagreements", 0) + books.open + totals.get("open", 0)
    mismatches += totals.get("captured", 0) != len(books.captured)
    mismatches += captured_amount != sum(a for _, a in books.captured)
    mismatches += totals.get("refunded", 0) != len(books.refunded)
    resets = next((d["counters"].get("resets_seen", 0) for d in (await rig.tech.status())["devices"]
                   if d["name"] == "payment"), 0)
    return {
        "card_captured_total": captured_amount,
        "card_captured": totals.get("captured", 0),
        "card_refunded_total": totals.get("refunded_amount", 0),
        "card_refunded": totals.get("refunded", 0),
        "card_denied": totals.get("denied", 0),
        "card_cancelled": totals.get("cancelled", 0),
        "card_voided": totals.get("voided", 0),
        "reader_resets": resets,
        "reader_cash_sales": len(books.cash_sales),
        "card_mismatches": int(mismatches),
    }

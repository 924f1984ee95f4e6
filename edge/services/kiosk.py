"""The customer's side of the machine for its own touchscreen app (the `kiosk` role): what can be bought
now, at the price the sale will charge, and the sale itself through `Machine.sell`.

`slots()` is a read: it never takes a price quote and never runs the sale guards (which count their
refusals), so listing the slots moves no counter; a sale still runs every check itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.core import food_safety
from edge.core import pricing as pr
from edge.core.catalog import Sku
from edge.core.sale_guard import MachineState, SlotStock, check_machine, check_stock
from edge.ledger import repo
from edge.services.machine import Machine

PAYMENT_REF_MAX = 64


class Kiosk:
    """One per web app, over the machine's façade; `invalidate` (the page's read-model caches) runs after
    every sale attempt, so the next read shows its effect."""

    def __init__(self, machine: Machine, invalidate: Callable[[], None] = lambda: None) -> None:
        self.m = machine
        self.invalidate = invalidate

    async def known_slot(self, slot_id: str) -> bool:
        """Whether `slot_id` is a slot of the current planogram (spiral or shelf)."""
        planogram = await repo.current_planogram(self.m.db)
        return planogram is not None and slot_id in planogram.slots

    async def sell(self, slot_id: str, payment_ref: str = "") -> dict[str, Any]:
        """A customer sale (raises SaleRefused before any money moves). `payment_ref` "" lets the configured
        payment device (the MDB reader) take the payment; otherwise it is recorded on the order."""
        try:
            return await self.m.sell(slot_id, payment_ref)
        finally:
            self.invalidate()

    async def slots(self) -> list[dict[str, Any]]:
        """Every spiral slot: {slot_id, sku_id, name, price, currency, count, available, reason}; `price` is
        what a sale now charges (None when the lane is past its best-before), `reason` None when available,
        else the first refusal a sale would meet, in the sale's order (edge/core/sale_guard.py, then the
        plant's guards, then the price)."""
        planogram = await repo.current_planogram(self.m.db)
        if planogram is None:
            return []
        stock = await repo.stock(self.m.db)
        vend = self.m.vend
        machine = check_machine(MachineState(vend.accepting, vend.unreconciled, self.m.board.connected))
        out = []
        for slot_id in sorted(planogram.slots):
            if planogram.slots[slot_id].shelf is not None:  # take-and-go shelves are not sold from here
                continue
            sku = planogram.sku_for_slot(slot_id)
            row = stock.get(slot_id)
            price = await self._price(slot_id, sku)
            refusal = machine or check_stock(slot_id, None if row is None else SlotStock(row.count, row.disabled))
            reason = refusal.reason if refusal is not None else self._guard_refusal(sku.perishable)
            if reason is None and price is None:
                reason = "expired"
            out.append({"slot_id": slot_id, "sku_id": sku.sku_id, "name": sku.name, "price": price,
                        "currency": sku.price.currency, "count": row.count if row is not None else 0,
                        "available": reason is None, "reason": reason})
        return out

    async def _price(self, slot_id: str, sku: Sku) -> int | None:
        book = self.m.vend.prices
        if book is None:
            return sku.price.amount
        priced = await book.price(self.m.db, slot_id, sku)
        return None if isinstance(priced, pr.Expired) else priced.unit_price

    def _guard_refusal(self, perishable: bool) -> str | None:
        """The plant's sale guards (food safety, then mains), read without running them: they count refusals."""
        temp, power = self.m.services.temperature, self.m.services.power
        if temp is not None and not food_safety.sellable(temp.safety, perishable):
            return "food_safety_lockout"
        if power is not None and not power.mains.on_mains:
            return "mains_fail"
        return None

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
from edge.core.catalog import Planogram
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
        what a sale now charges (None when the lane is past its best-before), `reason` None when available."""
        planogram = await repo.current_planogram(self.m.db)
        if planogram is None:
            return []
        stock = await repo.stock(self.m.db)
        machine_wide = self._machine_refusal()
        out = []
        for slot_id in sorted(planogram.slots):
            if planogram.slots[slot_id].shelf is not None:  # take-and-go shelves are not sold from here
                continue
            sku = planogram.sku_for_slot(slot_id)
            price = await self._price(planogram, slot_id)
            row = stock.get(slot_id)
            count = row.count if row is not None else 0
            reason = machine_wide or self._slot_refusal(row, price, sku.perishable)
            out.append({"slot_id": slot_id, "sku_id": sku.sku_id, "name": sku.name, "price": price,
                        "currency": sku.price.currency, "count": count, "available": reason is None,
                        "reason": reason})
        return out

    async def _price(self, planogram: Planogram, slot_id: str) -> int | None:
        sku = planogram.sku_for_slot(slot_id)
        book = self.m.vend.prices
        if book is None:
            return sku.price.amount
        priced = await book.price(self.m.db, slot_id, sku)
        return None if isinstance(priced, pr.Expired) else priced.unit_price

    def _machine_refusal(self) -> str | None:
        """Why no slot sells now (the same codes a sale is refused with), or None."""
        vend = self.m.vend
        if not vend.accepting:
            return "stopping"
        if not self.m.board.connected:
            return "board_offline"
        if vend.unreconciled:
            return "reconciling"
        power = self.m.services.power
        if power is not None and not power.mains.on_mains:
            return "mains_fail"
        return None

    def _slot_refusal(self, row: repo.StockRow | None, price: int | None, perishable: bool) -> str | None:
        if row is None:
            return "unknown_slot"
        if row.disabled:
            return "slot_disabled"
        if row.count <= 0:
            return "sold_out"
        if price is None:
            return "expired"
        temp = self.m.services.temperature
        if temp is not None and not food_safety.sellable(temp.safety, perishable):
            return "food_safety_lockout"
        return None

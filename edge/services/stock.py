"""Restock and stock corrections by technicians; each one is an audited event and a stock record."""

from __future__ import annotations

from typing import Any

import structlog

from edge.core.errors import SaleRefused
from edge.ledger import journal, repo
from edge.ledger.db import LedgerDB

log = structlog.get_logger(__name__)


class StockService:
    def __init__(self, db: LedgerDB) -> None:
        self.db = db

    async def restock(self, slot_id: str | None, count: int | None = None, *, actor: str) -> dict[str, int]:
        """Set a slot (or every slot when slot_id is None) to `count` items, or fill to capacity.

        Returns {slot_id: new_count}. Restocking also re-enables a slot disabled for jams — the
        technician has the door open and has cleared it — and clears its low-stock alarm.
        """
        result: dict[str, int] = {}
        async with self.db.tx() as tx:
            rows = await repo.stock_rows(tx, slot_id)
            if not rows:
                raise SaleRefused("unknown_slot", str(slot_id))
            # a vend whose outcome is not known yet, or that waits for a count, would be settled
            # against the wrong number: count first (Stock page), then restock
            blocked = await journal.blocking_restock(tx, slot_id)
            if blocked is not None:
                raise SaleRefused("reconciling", f"slot {blocked} has a vend being reconciled or waiting for a count")
            for r in rows:
                target = r.capacity if count is None else count
                if target < 0 or target > r.capacity:
                    raise SaleRefused("bad_count", f"{r.slot_id}: 0..{r.capacity}")
                result[r.slot_id] = await repo.change_stock(tx, r.slot_id, target - r.count, "restock", actor=actor)
                # the technician has filled the lane with its own product: take-and-go may trust that
                # again (`ShelfObservation.pure`) until a session puts something into it
                await repo.set_mixed(tx, [r.slot_id], False)
                await repo.set_slot_disabled(tx, r.slot_id, False, None)
                await repo.clear_alarm(tx, f"low_stock:{r.slot_id}", "restocked")
                await repo.clear_alarm(tx, f"slot_disabled:{r.slot_id}", "restocked")
            await tx.event("restock", {"actor": actor, "slots": result})
        log.info("restocked", actor=actor, slots=len(result))
        return result

    async def levels(self) -> dict[str, Any]:
        return {k: v.__dict__ for k, v in (await repo.stock(self.db)).items()}

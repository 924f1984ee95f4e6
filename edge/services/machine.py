"""The one façade the web page, the CLI, cloud commands and the demo use to talk to the machine."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from drivers.vend_board import VendBoard
from edge import __version__
from edge.ledger import journal, repo
from edge.ledger.db import LedgerDB
from edge.services.registry import Services
from edge.services.stock import StockService
from edge.services.vend import VendService


@dataclass
class Machine:
    """Everything a caller may do, with the state it may read. Built by the daemon."""

    machine_id: str
    db: LedgerDB
    board: VendBoard
    vend: VendService
    stock: StockService
    services: Services = field(default_factory=Services)  # the optional services, typed
    started_at: float = field(default_factory=time.time)
    mode: str = "starting"

    async def sell(self, slot_id: str, payment_ref: str = "") -> dict[str, Any]:
        return await self.vend.sell(slot_id, payment_ref)

    async def test_vend(self, slot_id: str, actor: str) -> dict[str, Any]:
        return await self.vend.sell(slot_id, f"test:{actor}", test=True, actor=actor)

    async def restock(self, slot_id: str | None, count: int | None, actor: str) -> dict[str, int]:
        return await self.stock.restock(slot_id, count, actor=actor)

    async def settle_count(self, order_id: str, counted: int, actor: str) -> dict[str, Any]:
        """A technician's count settles a vend nobody could tell the outcome of (see VendService)."""
        return await self.vend.settle_by_count(order_id, counted, actor=actor)

    async def vends_needing_count(self) -> list[dict[str, Any]]:
        return [{"order_id": e.order_id, "slot_id": e.slot_id, "seq": e.seq}
                for e in await journal.needs_count(self.db)]

    async def status(self) -> dict[str, Any]:
        alarms = await repo.active_alarms(self.db)
        return {
            "machine_id": self.machine_id,
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "mode": self.mode,
            "board": {"connected": bool(self.board.connected), "counters": dict(self.board.counters),
                      "info": dataclasses.asdict(info) if (info := self.board.info) else None,
                      "incompatible": self.board.incompatible},
            "unreconciled_vends": self.vend.unreconciled,
            "alarms": alarms,
        }

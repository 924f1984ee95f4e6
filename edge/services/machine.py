"""The one façade the web page, the CLI, cloud commands and the demo use to talk to the machine."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edge import __version__
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.stock import StockService
from edge.services.vend import VendService


@dataclass
class Machine:
    """Everything a caller may do, with the state it may read. Built by the daemon."""

    machine_id: str
    db: LedgerDB
    board: Any
    vend: VendService
    stock: StockService
    extras: dict[str, Any] = field(default_factory=dict)  # optional services keyed by name
    started_at: float = field(default_factory=time.time)
    mode: str = "starting"

    async def sell(self, slot_id: str, payment_ref: str = "") -> dict[str, Any]:
        return await self.vend.sell(slot_id, payment_ref)

    async def test_vend(self, slot_id: str, actor: str) -> dict[str, Any]:
        return await self.vend.sell(slot_id, f"test:{actor}", test=True, actor=actor)

    async def restock(self, slot_id: str | None, count: int | None, actor: str) -> dict[str, int]:
        return await self.stock.restock(slot_id, count, actor=actor)

    async def status(self) -> dict[str, Any]:
        alarms = await repo.active_alarms(self.db)
        return {
            "machine_id": self.machine_id,
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "mode": self.mode,
            "board": {"connected": bool(getattr(self.board, "connected", False)),
                      "counters": dict(getattr(self.board, "counters", {}))},
            "unreconciled_vends": self.vend.unreconciled,
            "alarms": alarms,
        }

"""The technician's actions on the diagnostics page: each one audited, each refusal a `TechnicianRefused`.

Optional services are read from the typed registry (`machine.services`); an action whose service this
machine does not have is refused with `NotAvailable` (reason ``not_available``). A device that fails
while acting is ``device_error``; input the action cannot use is ``bad_input``. Refusals of the vend
flow itself (a test vend, a count) stay `SaleRefused`: the web layer answers both the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from drivers.errors import DeviceError
from edge.core.errors import EdgeError
from edge.ledger import fresh
from edge.ledger.users import audit
from edge.services import review
from edge.services.machine import Machine
from edge.services.queries import Queries, plain

MAX_SHELF_LIFE_DAYS = 366  # a best-before further ahead is a typing error
REGISTER_READ_TIMEOUT_S = 3.0


MIN_UNLOCK_MS, MAX_UNLOCK_MS = 500, 600_000  # a restock can take minutes to start


class TechnicianRefused(EdgeError):
    """A technician action was refused. `reason` is a stable snake_case code (``bad_input``,
    ``not_available``, ``device_error``) shown on the page; `detail` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class NotAvailable(TechnicianRefused):
    """The optional service an action needs is not part of this machine."""

    def __init__(self, service: str) -> None:
        super().__init__("not_available", f"{service} is not available on this machine")


class Technician:
    """One per web app, beside its `Queries` (whose caches every action invalidates)."""

    def __init__(self, machine: Machine, queries: Queries) -> None:
        self.m = machine
        self.q = queries

    async def audit(self, actor: str, action: str, outcome: str = "ok", **detail: Any) -> None:
        """Record who did what in the ledger's audit log; the next page shows the action's effect."""
        self.q.invalidate()
        async with self.m.db.tx() as tx:
            await audit(tx, actor, action, outcome, **detail)

    async def restock(
        self, actor: str, slot_id: str | None, count: int | None, best_before: str | None = None
    ) -> dict[str, int]:
        """Fill one slot (or all); `best_before` (ISO date, one slot only) is the earliest date of what is
        now in the lane. Without it a lane keeps the date it had."""
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise TechnicianRefused("bad_input", f"count must be a whole number >= 0 (got {count!r})")
        day = self.check_best_before(best_before) if best_before else None
        if day and slot_id is None:
            raise TechnicianRefused("bad_input", "a best-before date belongs to one slot")
        result = await self.m.restock(slot_id, count, actor)
        if day and slot_id is not None:
            async with self.m.db.tx() as tx:
                await fresh.set_best_before(tx, slot_id, day)
        await self.audit(
            actor,
            "restock",
            slot_id=slot_id or "*",
            count=count,
            slots=len(result),
            **({"best_before": day} if day else {}),
        )
        return result

    def check_best_before(self, value: Any) -> str:
        """An ISO date from today (local) up to MAX_SHELF_LIFE_DAYS ahead; anything else is refused."""
        try:
            day = dt.date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            day = None
        today = dt.date.fromisoformat(self.q.today())
        last = today + dt.timedelta(days=MAX_SHELF_LIFE_DAYS)
        if day is None or not today <= day <= last:
            raise TechnicianRefused(
                "bad_input", f"best-before must be a date (YYYY-MM-DD) from {today} to {last} (got {value!r})"
            )
        return day.isoformat()

    async def review_decide(
        self, actor: str, session_id: str, action: str, basket: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """Approve, correct or void a take-and-go basket waiting for review (charged only now; audited)."""
        if self.m.services.takeandgo is None:
            raise NotAvailable("take-and-go")
        try:
            return await review.decide(self.m.db, actor, session_id, action, basket,
                                       prices=self.m.services.takeandgo.prices)
        finally:
            self.q.invalidate()

    async def settle_count(self, actor: str, order_id: str, counted: int) -> dict[str, Any]:
        """The technician counted the slot of a needs_count vend: the count settles it (VendService)."""
        await self.audit(actor, "settle_count", order_id=order_id, counted=counted)
        try:
            return await self.m.settle_count(order_id, counted, actor)
        finally:
            self.q.invalidate()

    async def test_vend(self, actor: str, slot_id: str) -> dict[str, Any]:
        await self.audit(actor, "test_vend", slot_id=slot_id)  # before: the motor may run even if we crash
        try:
            return await self.m.test_vend(slot_id, actor)
        finally:
            self.q.invalidate()

    async def unlock_door(self, actor: str, ms: int) -> str:
        """Unlock for `ms` (MIN_UNLOCK_MS..MAX_UNLOCK_MS): the window to open the door; a vend board's
        own latch caps it at 65.5 s, an I/O-module door is relocked by the daemon when it ends."""
        door = self.m.services.door
        if door is None:
            raise NotAvailable("door service")
        if ms > door.max_unlock_ms:
            raise TechnicianRefused("bad_input", f"ms: this door's lock takes at most {door.max_unlock_ms} ms")
        await self.audit(actor, "unlock_door", ms=ms)
        try:
            await door.unlock(ms, "technician", actor=actor)
        except (DeviceError, TimeoutError) as exc:
            raise TechnicianRefused("device_error", str(exc)) from exc
        self.q.invalidate()
        return "unlocked"

    async def tare(self, actor: str, shelf: int | None) -> str:
        shelves = self.m.services.shelves
        if shelves is None:
            raise NotAvailable("weight shelves")
        targets = [shelf] if shelf is not None else sorted(shelves.shelves)
        if not targets:
            raise TechnicianRefused("bad_input", "no shelves to tare")
        if shelf is not None and shelf not in shelves.shelves:
            raise TechnicianRefused("bad_input", f"no shelf {shelf}; this machine has {sorted(shelves.shelves)}")
        await self.audit(actor, "tare", shelf=shelf)
        try:
            for k in targets:
                await shelves.tare(k)
        except (DeviceError, TimeoutError, KeyError) as exc:
            raise TechnicianRefused("device_error", f"tare failed: {exc}") from exc
        self.q.invalidate()
        return f"tared {targets}"

    async def clear_lockout(self, actor: str) -> str:
        fs = self.m.services.temperature
        if fs is None:
            raise NotAvailable("food-safety service")
        cleared = bool(await fs.clear_lockout(actor))
        self.q.invalidate()
        await self.audit(actor, "clear_food_safety_lockout", cleared=cleared)
        return "cleared" if cleared else "no lockout was active"

    async def read_registers(self, actor: str, device: str) -> dict[str, Any]:
        """One out-of-band read of every point of a Modbus device (`read_now`), for the technician."""
        devices = self.q.modbus_devices()
        if not devices:
            raise NotAvailable("register reads")
        dev = devices.get(device)
        if dev is None:
            raise TechnicianRefused("bad_input", f"no Modbus device {device[:64]!r}; this machine has {sorted(devices)}")
        await self.audit(actor, "read_registers", device=device)
        try:
            async with asyncio.timeout(REGISTER_READ_TIMEOUT_S):
                return plain(await dev.read_now())
        except (DeviceError, TimeoutError) as exc:
            raise TechnicianRefused("device_error", f"{device}: {type(exc).__name__} {exc}") from exc

"""The edge side of the cloud channel: config applied atomically, commands applied at most once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from edge.core.catalog import CatalogInvalid, Money, Planogram
from edge.core.errors import EdgeError
from edge.core.pricing import RuleSet
from edge.core.wire import Command, CommandResult
from edge.crashpoints import crash_point
from edge.ledger import commands, journal, repo
from edge.ledger import pricing as ledger_pricing
from edge.ledger.db import LedgerDB

log = structlog.get_logger(__name__)

Handler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


class LedgerConfigSink:
    """ConfigSink: a new catalog/planogram is validated whole, then stored and applied in one transaction.

    `verify_pricing` (the daemon passes the machine-secret HMAC check of sync.signing) must accept the
    `pricing` object's `signature`, or the whole config is refused: prices are money."""

    def __init__(self, db: LedgerDB, on_settings: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
                 *, verify_pricing: Callable[[Mapping[str, Any]], bool] | None = None):
        self.db = db
        self.on_settings = on_settings
        self.verify_pricing = verify_pricing

    async def current_version(self) -> int:
        p = await repo.current_planogram(self.db)
        return p.version if p else 0

    async def apply_config(self, version: int, doc: Mapping[str, Any]) -> None:
        planogram = Planogram.from_doc({**doc, "version": version})  # raises CatalogInvalid (a ValueError)
        pricing = doc.get("pricing")  # offline price rules: validated whole, or the config is rejected
        RuleSet.from_doc(pricing)  # raises PricingInvalid (a ValueError)
        if pricing is not None and self.verify_pricing is not None and not self.verify_pricing(pricing):
            raise CatalogInvalid("pricing: bad_signature (signed by the cloud with the machine secret)")
        settings = doc.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise CatalogInvalid("settings must be an object")
        async with self.db.tx() as tx:
            await repo.apply_planogram(tx, planogram, "cloud")
            await ledger_pricing.store(tx, pricing)
            crash_point("config.mid_apply")
        if settings and self.on_settings:
            await self.on_settings(settings)
        log.info("config_applied", version=version, skus=len(planogram.skus), slots=len(planogram.slots))

    async def config_rejected(self, version: int, reason: str) -> None:
        async with self.db.tx() as tx:
            await tx.event("config_rejected", {"version": version, "reason": reason[:500]}, severity="error")
        log.error("config_rejected", version=version, reason=reason)


class CommandInbox:
    """CommandSink: each command id is claimed in the ledger *before* it runs, so a re-delivery after a
    crash is never applied again (at most once); its stored result is returned instead."""

    def __init__(self, db: LedgerDB) -> None:
        self.db = db
        self.handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    async def handle(self, command: Command) -> CommandResult:
        seen = await commands.stored(self.db, command.command_id)
        if seen is not None:
            stored_status, detail = seen
            status = stored_status if stored_status != "started" else "failed"
            return CommandResult(command.command_id, "duplicate",
                                 {"original_status": status, **({"interrupted": True} if stored_status == "started"
                                                                 else detail)})
        async with self.db.tx() as tx:
            await commands.claim(tx, command.command_id, command.name)
        result = await self._run(command)
        async with self.db.tx() as tx:
            await commands.finish(tx, command.command_id, result.status, result.detail)
            await tx.event("command_applied", {"command_id": command.command_id, "name": command.name,
                                               "status": result.status})
        return result

    async def _run(self, command: Command) -> CommandResult:
        handler = self.handlers.get(command.name)
        if handler is None:
            return CommandResult(command.command_id, "rejected", {"error": f"unknown command {command.name!r}"})
        try:
            detail = await handler(command.args)
            return CommandResult(command.command_id, "ok", dict(detail))
        except (EdgeError, ValueError, KeyError, TypeError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            log.warning("command_rejected", command_id=command.command_id, name=command.name, error=str(exc))
            return CommandResult(command.command_id, "rejected", {"error": str(exc), "reason": reason})


def price_override(planogram: Planogram, sku_id: str, price: int) -> Planogram:
    """A `set_price` command: the same planogram version with one SKU's price changed."""
    sku = planogram.skus[sku_id]
    skus = dict(planogram.skus)
    skus[sku_id] = replace(sku, price=Money(int(price), sku.price.currency))
    return replace(planogram, skus=skus)


def standard_handlers(machine: Any) -> dict[str, Handler]:
    """The commands every machine understands; services in `machine.services` add theirs."""

    async def vend(args: Mapping[str, Any]) -> Mapping[str, Any]:
        order = await machine.sell(str(args["slot_id"]), str(args.get("payment_ref", "cloud")))
        return {"order_id": order["order_id"], "status": order["status"]}

    async def set_price(args: Mapping[str, Any]) -> Mapping[str, Any]:
        price = args["price"]
        if not isinstance(price, int) or isinstance(price, bool) or not 0 <= price <= 1_000_000:
            raise ValueError("price must be an integer of minor units 0..1000000")
        current = await repo.current_planogram(machine.db)
        if current is None or args["sku_id"] not in current.skus:
            raise KeyError(f"unknown sku {args.get('sku_id')!r}")
        async with machine.db.tx() as tx:
            await repo.apply_planogram(tx, price_override(current, str(args["sku_id"]), price), "set_price")
        return {"sku_id": args["sku_id"], "price": price}

    async def lock_out_slot(args: Mapping[str, Any]) -> Mapping[str, Any]:
        slot, locked = str(args["slot_id"]), bool(args.get("locked", True))
        async with machine.db.tx() as tx:
            if await repo.stock_row(tx, slot) is None:
                raise KeyError(f"unknown slot {slot!r}")
            if not locked and await journal.needs_count(tx, slot):
                raise ValueError(f"slot {slot} has a vend waiting for a count: settle it with settle_count first")
            await repo.set_slot_disabled(tx, slot, locked, str(args.get("reason", "cloud lock-out")) if locked else None)
            await tx.event("slot_lockout", {"slot_id": slot, "locked": locked})
        return {"slot_id": slot, "locked": locked}

    async def settle_count(args: Mapping[str, Any]) -> Mapping[str, Any]:
        """A route driver's count, sent from the back office: settles a needs_count vend."""
        counted = args["counted"]
        if not isinstance(counted, int) or isinstance(counted, bool) or not 0 <= counted <= 10_000:
            raise ValueError("counted must be an integer 0..10000")
        actor = f"cloud:{str(args.get('actor', 'operator'))[:64]}"
        order = await machine.settle_count(str(args["order_id"]), counted, actor)
        return {"order_id": order["order_id"], "status": order["status"], "refund_due": order["refund_due"]}

    return {"vend": vend, "set_price": set_price, "lock_out_slot": lock_out_slot, "settle_count": settle_count}

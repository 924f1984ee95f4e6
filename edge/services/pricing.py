"""The price book: what a slot costs now under the offline price rules (`edge.core.pricing`), the
price a customer was shown (a quote, honoured for its time to live), and the rule to record on
the order line. Rules come from the cloud's config (`pricing` object, stored by the config sink).

Days and hours of time-of-day rules are the machine's local time (`tz`); a lane's best-before date
means "good until the end of that local day".
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from edge.clock import SystemClock
from edge.core import pricing as pr
from edge.core.catalog import Sku
from edge.core.errors import SaleRefused
from edge.ledger import pricing as store
from edge.ledger import repo
from edge.ledger.db import LedgerDB, Tx

log = structlog.get_logger(__name__)


def _epoch(iso: str | None) -> float:
    if not iso:
        return 0.0
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class PriceBook:
    """Prices for the vend flow and the page. One per machine."""

    def __init__(
        self, db: LedgerDB, *, clock: SystemClock | None = None, tz: str = "UTC", quote_ttl_s: float = 120.0
    ) -> None:
        self.db = db
        self.clock = clock or db.clock
        self.tz = zoneinfo.ZoneInfo(tz)
        self.quote_ttl_s = quote_ttl_s
        self._quotes: dict[str, pr.Quote] = {}

    async def rules(self) -> pr.RuleSet:
        cached = self.db.cache.get(store.META_KEY)
        if isinstance(cached, pr.RuleSet):
            return cached
        rules = pr.RuleSet.from_doc(await store.load(self.db))  # validated when stored; re-checked here
        self.db.cache[store.META_KEY] = rules
        return rules

    def context(self, high_water_iso: str | None, at: float | None = None) -> pr.Context:
        """Now, or the ledger time ``at`` (epoch s) of an earlier event such as a session's close."""
        now = self.clock.wall() if at is None else at
        local = dt.datetime.fromtimestamp(now, self.tz)
        return pr.Context(local.hour * 60 + local.minute, local.weekday(), now,
                          _epoch(high_water_iso) if at is None else at)

    def _best_before(self, day: str | None) -> float | None:
        if not day:
            return None
        end = dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=1), dt.time(), self.tz)
        return end.timestamp()

    async def price(self, tx: Tx | LedgerDB, slot_id: str, sku: Sku) -> pr.Priced | pr.Expired:
        """The price now (no quote): for the page and for a sale without a shown price."""
        item = pr.Item(
            sku.sku_id, slot_id, sku.price.amount, self._best_before(await store.best_before(tx, slot_id))
        )
        return pr.price_item(await self.rules(), item, self.context(await store.high_water(tx)))

    async def quote(self, slot_id: str, sku: Sku) -> pr.Quote:
        """Price shown to a customer at selection; `for_sale` charges it while the quote lives."""
        priced = await self.price(self.db, slot_id, sku)
        if isinstance(priced, pr.Expired):
            raise SaleRefused("expired", f"{slot_id}: past its best-before")
        q = pr.Quote(priced, self.clock.monotonic(), self.quote_ttl_s)
        self._quotes[slot_id] = q
        return q

    async def for_sale(self, tx: Tx | LedgerDB, slot_id: str, sku: Sku) -> pr.Priced:
        """The unit price to charge: the live quote for this slot and SKU if there is one, else now's."""
        q = self._quotes.pop(slot_id, None)
        if q is not None and q.priced.sku_id == sku.sku_id and q.honoured(self.clock.monotonic()):
            return q.priced
        priced = await self.price(tx, slot_id, sku)
        if isinstance(priced, pr.Expired):
            raise SaleRefused("expired", f"{slot_id}: past its best-before")
        return priced

    async def price_lines(self, tx: Tx, lines: Sequence[Mapping[str, Any]], *,
                          at: float | None = None) -> list[Mapping[str, Any]]:
        """A take-and-go basket (qty per lane, `unit_price` = list price) under the rules, bundles
        included; a line splits when its units get different prices, and each says its rule. A unit
        taken from a lane past its best-before is charged nothing (rule "expired"): it should not have
        been on sale, and the customer already has it. ``at``: price as at that ledger time (a basket
        settled later on the review page is priced as when the customer took it)."""
        rules, ctx = await self.rules(), self.context(await store.high_water(tx), at)
        items: list[pr.Item] = []
        for ln in lines:
            bb = self._best_before(await store.best_before(tx, ln["slot_id"]))
            items += [pr.Item(ln["sku_id"], ln["slot_id"], int(ln["unit_price"]), bb)] * int(ln["qty"])
        grouped: dict[tuple[str, str, int, str], int] = {}
        for p in pr.price_basket(rules, items, ctx):
            key = (
                (p.slot_id, p.sku_id, 0, "expired")
                if isinstance(p, pr.Expired)
                else (p.slot_id, p.sku_id, p.unit_price, p.rule_id)
            )
            grouped[key] = grouped.get(key, 0) + 1
        return [
            {"sku_id": sku, "slot_id": slot, "qty": n, "unit_price": price, "price_rule": rule}
            for (slot, sku, price, rule), n in grouped.items()
        ]

    async def board(self) -> dict[str, Any]:
        """What every slot costs now and why, and the rules in force (the technician's price page)."""
        planogram = await repo.current_planogram(self.db)
        rules = await self.rules()
        slots = []
        for slot_id in sorted(planogram.slots if planogram else ()):
            sku = planogram.sku_for_slot(slot_id) if planogram else None
            if sku is None:
                continue
            p = await self.price(self.db, slot_id, sku)
            slots.append(
                {
                    "slot_id": slot_id,
                    "sku_id": sku.sku_id,
                    "name": sku.name,
                    "currency": sku.price.currency,
                    "list_price": sku.price.amount,
                    "price": p.unit_price if isinstance(p, pr.Priced) else None,
                    "rule": p.rule_id if isinstance(p, pr.Priced) else "expired",
                }
            )
        return {"version": rules.version, "rules": pr.describe(rules), "slots": slots}


def validate(doc: Mapping[str, Any] | None) -> pr.RuleSet:
    """Check a pricing document before it is stored (raises PricingInvalid, a ValueError)."""
    return pr.RuleSet.from_doc(doc)

"""The take-and-go review queue made actionable: approve the best guess, correct the basket, or void.

Nothing is charged until a technician decides (edge/ledger/review.py writes the decision); this module
turns a decision into order lines and checks it first. The lines start at the planogram's list prices
and are then priced by the active price rules (the `PriceBook`, as the take-and-go flow prices a basket
it charges at once) as at the time the customer closed the door: a happy hour or a near-expiry
markdown the customer shopped under still applies when the basket is settled the next morning, and
a lane that expired overnight is not charged as expired. Each line records its rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from edge.core.catalog import Planogram
from edge.core.errors import SaleRefused
from edge.ledger import repo, review
from edge.ledger.db import LedgerDB
from edge.services.pricing import PriceBook

ACTIONS = ("approve", "correct", "void")
MAX_QTY = 99  # per product in one basket: a door-open session cannot take more


async def decide(
    db: LedgerDB,
    actor: str,
    session_id: str,
    action: str,
    basket: Mapping[str, int] | None = None,
    *,
    prices: PriceBook | None = None,
) -> dict[str, Any]:
    """Settle one basket; returns {session_id, status, total, currency, lines}. Refusals are SaleRefused.
    With ``prices`` the lines are priced by the rules as at the session's close (else list prices)."""
    if action not in ACTIONS:
        raise SaleRefused("bad_input", f"decision must be one of {list(ACTIONS)}")
    item = await review.waiting(db, session_id)
    if item is None:
        raise SaleRefused(
            "not_found", f"basket {session_id!r} is not waiting for review (decided or unknown)"
        )
    planogram = await repo.current_planogram(db)
    if planogram is None:
        raise SaleRefused("no_planogram", "no planogram: prices unknown")
    if action == "void":
        lines: list[dict[str, Any]] = []
    elif action == "approve":
        lines = [dict(ln) for ln in item["lines"]]
        if not lines:
            raise SaleRefused("bad_input", "the best guess is empty: correct the basket or void it")
    else:
        lines = correct_lines(check_basket(basket, planogram), item["lines"], planogram)
    closed_at = _epoch((await repo.order_doc(db, session_id))["created_at"]) if lines and prices else None
    async with db.tx() as tx:
        if prices is not None and closed_at is not None:
            lines = [dict(ln) for ln in await prices.price_lines(tx, lines, at=closed_at)]
        total = sum(ln["qty"] * ln["unit_price"] for ln in lines)
        if item["limit_amount"] is not None and total > item["limit_amount"]:
            raise SaleRefused(
                "over_limit", f"total {total} is over the customer's authorised {item['limit_amount']}"
            )
        order = await review.decide(tx, session_id, action=action, lines=lines, actor=actor)
    return {
        "session_id": session_id,
        "status": order["status"],
        "total": order["total_amount"],
        "currency": order["currency"],
        "lines": order["lines"],
    }


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def check_basket(basket: Mapping[str, Any] | None, planogram: Planogram) -> dict[str, int]:
    """{sku: qty > 0} with every SKU in the planogram and quantities 0..MAX_QTY (zeros dropped)."""
    if not isinstance(basket, Mapping):
        raise SaleRefused("bad_input", "basket: {sku_id: quantity}")
    out: dict[str, int] = {}
    for sku, qty in basket.items():
        if sku not in planogram.skus:
            raise SaleRefused("bad_input", f"unknown product {sku!r}")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 0 <= qty <= MAX_QTY:
            raise SaleRefused("bad_input", f"quantity of {sku} must be a whole number 0..{MAX_QTY}")
        if qty:
            out[sku] = qty
    if not out:
        raise SaleRefused("bad_input", "the corrected basket is empty: void it instead")
    return out


def correct_lines(
    basket: Mapping[str, int], guess: list[Mapping[str, Any]], planogram: Planogram
) -> list[dict[str, Any]]:
    """Order lines for the corrected basket: each product taken from the lanes the guess saw it leave,
    else from its home lanes in the planogram, at the planogram's list price (rules come after)."""
    seen = {ln["sku_id"]: ln["slot_id"] for ln in reversed(guess)}  # the first lane each product left
    home: dict[str, str] = {}
    for slot in sorted(planogram.slots.values(), key=lambda s: (s.shelf is None, s.slot_id)):  # shelves first
        home.setdefault(slot.sku_id, slot.slot_id)
    lines = []
    for sku, qty in sorted(basket.items()):
        slot_id = seen.get(sku) or home.get(sku)
        if slot_id is None:
            raise SaleRefused("bad_input", f"{sku} has no lane on this machine")
        lines.append(
            {"sku_id": sku, "slot_id": slot_id, "qty": qty, "unit_price": planogram.skus[sku].price.amount}
        )
    return lines

"""Catalog, slots and planogram: pure data with validation. Money is integer minor units."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SLOT_RE = re.compile(r"^[A-Z][1-9][0-9]?$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class CatalogInvalid(ValueError):
    """A catalog/planogram document does not validate; the message says where."""


@dataclass(frozen=True, order=True)
class Money:
    """An amount in minor units (cents) with an ISO-4217 currency. Never a float."""

    amount: int
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise CatalogInvalid(f"money amount must be an integer of minor units, got {self.amount!r}")
        if not CURRENCY_RE.match(self.currency):
            raise CatalogInvalid(f"currency must be 3 upper-case letters, got {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise CatalogInvalid(f"cannot add {other.currency} to {self.currency}")
        return Money(self.amount + other.amount, self.currency)

    def times(self, n: int) -> Money:
        return Money(self.amount * n, self.currency)

    def __str__(self) -> str:
        return f"{self.amount // 100}.{self.amount % 100:02d} {self.currency}"


@dataclass(frozen=True)
class Sku:
    """A product. Weight and tolerance are catalog data owned by the cloud."""

    sku_id: str
    name: str
    price: Money
    weight_g: float = 0.0
    weight_tol_g: float = 5.0
    perishable: bool = False


@dataclass(frozen=True)
class Slot:
    """A physical slot/lane: `A1`. `shelf` and `lane` place it for the weight shelves and cameras."""

    slot_id: str
    sku_id: str
    capacity: int
    shelf: int | None = None  # None: a spiral slot vended by the board; >= 0: a take-and-go lane
    lane: int = 0

    def __post_init__(self) -> None:
        if not SLOT_RE.match(self.slot_id):
            raise CatalogInvalid(f"slot id must look like 'A1'..'Z99', got {self.slot_id!r}")
        if self.capacity < 1 or self.capacity > 999:
            raise CatalogInvalid(f"slot {self.slot_id}: capacity must be 1..999, got {self.capacity}")


@dataclass(frozen=True)
class Planogram:
    """Which SKU sits in which slot, with the catalog it refers to. Versioned by the cloud."""

    version: int
    skus: Mapping[str, Sku]
    slots: Mapping[str, Slot]
    currency: str = "EUR"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def sku_for_slot(self, slot_id: str) -> Sku:
        try:
            return self.skus[self.slots[slot_id].sku_id]
        except KeyError as exc:
            raise CatalogInvalid(f"unknown slot {slot_id!r}") from exc

    def slots_on_shelf(self, shelf: int) -> list[Slot]:
        return sorted((s for s in self.slots.values() if s.shelf == shelf), key=lambda s: s.lane)

    def shelves(self) -> list[int]:
        return sorted({s.shelf for s in self.slots.values() if s.shelf is not None})

    def to_doc(self) -> dict[str, Any]:
        """The JSON document form (the same shape `from_doc` reads and the cloud sends)."""
        return {
            "version": self.version,
            "currency": self.currency,
            "skus": [
                {"sku_id": s.sku_id, "name": s.name, "price": s.price.amount, "weight_g": s.weight_g,
                 "weight_tol_g": s.weight_tol_g, "perishable": s.perishable}
                for s in self.skus.values()
            ],
            "slots": [
                {"slot_id": s.slot_id, "sku_id": s.sku_id, "capacity": s.capacity, "shelf": s.shelf,
                 "lane": s.lane}
                for s in self.slots.values()
            ],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Planogram:
        """Validate a whole catalog+planogram document; raise CatalogInvalid naming the field."""
        if not isinstance(doc, Mapping):
            raise CatalogInvalid("document must be an object")
        version = _field(doc, "version", int, "document")
        currency = _field(doc, "currency", str, "document")
        if not CURRENCY_RE.match(currency):
            raise CatalogInvalid(f"document.currency must be 3 upper-case letters, got {currency!r}")
        skus = {s.sku_id: s for s in (_sku(d, currency, i) for i, d in enumerate(_list(doc, "skus")))}
        if len(skus) != len(_list(doc, "skus")):
            raise CatalogInvalid("skus: duplicate sku_id")
        slots: dict[str, Slot] = {}
        for i, d in enumerate(_list(doc, "slots")):
            slot = _slot(d, i)
            if slot.slot_id in slots:
                raise CatalogInvalid(f"slots[{i}]: duplicate slot_id {slot.slot_id}")
            if slot.sku_id not in skus:
                raise CatalogInvalid(f"slots[{i}]: unknown sku_id {slot.sku_id!r}")
            slots[slot.slot_id] = slot
        return Planogram(version=version, skus=skus, slots=slots, currency=currency)


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise CatalogInvalid(f"document.{key} must be a list")
    return value


def _field(d: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(d, Mapping):
        raise CatalogInvalid(f"{where} must be an object")
    value = d.get(key)
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise CatalogInvalid(f"{where}.{key} must be {typ.__name__}, got {value!r}")
    return value


def _sku(d: Any, currency: str, i: int) -> Sku:
    where = f"skus[{i}]"
    if not isinstance(d, Mapping):
        raise CatalogInvalid(f"{where} must be an object")
    price = _field(d, "price", int, where)
    if price < 0 or price > 10_000_00:
        raise CatalogInvalid(f"{where}.price must be 0..1000000 minor units, got {price}")
    weight = float(_field(d, "weight_g", float, where)) if "weight_g" in d else 0.0
    tol = float(_field(d, "weight_tol_g", float, where)) if "weight_tol_g" in d else 5.0
    if weight < 0 or tol < 0:
        raise CatalogInvalid(f"{where}: weights must be >= 0")
    perishable = d.get("perishable", False)
    if not isinstance(perishable, bool):
        raise CatalogInvalid(f"{where}.perishable must be a boolean")
    return Sku(sku_id=_field(d, "sku_id", str, where), name=_field(d, "name", str, where),
               price=Money(price, currency), weight_g=weight, weight_tol_g=tol, perishable=perishable)


def _slot(d: Any, i: int) -> Slot:
    where = f"slots[{i}]"
    if not isinstance(d, Mapping):
        raise CatalogInvalid(f"{where} must be an object")
    shelf = _field(d, "shelf", int, where) if d.get("shelf") is not None else None
    lane = _field(d, "lane", int, where) if "lane" in d else 0
    return Slot(slot_id=_field(d, "slot_id", str, where), sku_id=_field(d, "sku_id", str, where),
                capacity=_field(d, "capacity", int, where), shelf=shelf, lane=lane)


def iter_slots(planogram: Planogram, slot_ids: Iterable[str]) -> list[Slot]:
    return [planogram.slots[s] for s in slot_ids if s in planogram.slots]

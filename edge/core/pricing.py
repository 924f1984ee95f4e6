"""Price rules applied offline: time of day, near-expiry markdowns, cloud promotions. Pure.

A `RuleSet` comes from the cloud's config document (`pricing` object, validated whole by
`RuleSet.from_doc`; the config channel is the signed sync protocol) and is evaluated on the
machine with no network. Every priced line says which rule priced it (`rule_id`, "" = list price).

Precedence (docs/operations-features.md), for one item:
1. past its best-before: not for sale (`Expired`), whatever the rules say;
2. every rule that applies *now* proposes a unit price — time-of-day window, near-expiry markdown,
   single-item promotion in its validity window; discounts never stack;
3. the lowest proposal wins (the customer is never charged more because a second rule also
   applied); a tie goes to the earlier kind in `KIND_ORDER` (promotion, near_expiry,
   time_of_day), then to the smaller rule id, so the choice is deterministic;
4. a bundle promotion (meal deal) then replaces the lines it covers when its price is lower
   than what those lines cost after step 3.

Time: rules see local wall time (hour, weekday) and UTC for validity windows. A wall clock that
jumps backwards must not resurrect an expired promotion: callers pass `high_water`, the latest
wall time the machine has trusted, and a promotion ended before it stays ended. The price a
customer was shown is kept (`Quote`) and honoured for `ttl_s` of *monotonic* time, so a rule that
starts or ends mid-session, or a clock jump, never changes a price already shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KIND_ORDER = ("promotion", "near_expiry", "time_of_day")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
MAX_RULES = 500


class PricingInvalid(ValueError):
    """The pricing document is not valid; the message names the rule and the field."""


@dataclass(frozen=True)
class Context:
    """When and where: local minute of the day (0..1439), weekday (0 = Monday), UTC epoch seconds,
    and the highest UTC time trusted so far (a backwards clock jump never goes below it)."""

    minute_of_day: int
    weekday: int
    utc: float
    high_water: float = 0.0

    @property
    def latest(self) -> float:
        return max(self.utc, self.high_water)


@dataclass(frozen=True)
class Item:
    """One item to price: what it is, its list price, and when it stops being good (UTC, or None)."""

    sku_id: str
    slot_id: str
    list_price: int
    best_before: float | None = None


@dataclass(frozen=True)
class Priced:
    sku_id: str
    slot_id: str
    unit_price: int
    rule_id: str  # "" = list price


@dataclass(frozen=True)
class Expired:
    """Not for sale: past its best-before."""

    sku_id: str
    slot_id: str
    best_before: float


def _price(list_price: int, percent_off: int | None, fixed: int | None) -> int:
    if fixed is not None:
        return min(fixed, list_price)  # a rule never raises a price
    assert percent_off is not None
    return list_price - (list_price * percent_off + 50) // 100  # round half up to the minor unit


def _minute(text: object, where: str) -> int:
    if not isinstance(text, str) or not HHMM.match(text):
        raise PricingInvalid(f"{where}: time must be 'HH:MM', got {text!r}")
    return int(text[:2]) * 60 + int(text[3:])


@dataclass(frozen=True)
class Rule:
    """A single-item rule of one kind. Window fields are used by the kinds that need them."""

    rule_id: str
    kind: str
    skus: frozenset[str] | None  # None = every SKU
    percent_off: int | None = None
    fixed_price: int | None = None
    start_min: int = 0  # time_of_day: [start, end) local minutes, wrapping midnight when start > end
    end_min: int = 0
    weekdays: frozenset[int] = frozenset(range(7))
    within_s: float = 0.0  # near_expiry: applies when 0 < best_before - now <= within_s
    valid_from: float = float("-inf")  # promotion: [valid_from, valid_until) UTC
    valid_until: float = float("inf")

    def applies(self, item: Item, ctx: Context) -> bool:
        if self.skus is not None and item.sku_id not in self.skus:
            return False
        if self.kind == "time_of_day":
            m, a, b = ctx.minute_of_day, self.start_min, self.end_min
            inside = a <= m < b if a < b else (m >= a or m < b) if a > b else False
            return inside and ctx.weekday in self.weekdays
        if self.kind == "near_expiry":
            return item.best_before is not None and 0 < item.best_before - ctx.utc <= self.within_s
        return self.valid_from <= ctx.utc < self.valid_until and ctx.latest < self.valid_until

    def price(self, item: Item) -> int:
        return _price(item.list_price, self.percent_off, self.fixed_price)


@dataclass(frozen=True)
class Bundle:
    """A meal deal: one item from each group for `price` (minor units), in its validity window."""

    rule_id: str
    groups: tuple[frozenset[str], ...]
    price: int
    valid_from: float = float("-inf")
    valid_until: float = float("inf")

    def live(self, ctx: Context) -> bool:
        return self.valid_from <= ctx.utc < self.valid_until and ctx.latest < self.valid_until


@dataclass(frozen=True)
class RuleSet:
    version: int = 0
    rules: tuple[Rule, ...] = ()
    bundles: tuple[Bundle, ...] = ()

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> RuleSet:
        """Validate the cloud's `pricing` object whole; raises PricingInvalid naming the rule and field."""
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise PricingInvalid("pricing must be an object")
        raw = doc.get("rules", [])
        if not isinstance(raw, list) or len(raw) > MAX_RULES:
            raise PricingInvalid(f"rules must be a list of at most {MAX_RULES}")
        rules, bundles, seen = [], [], set()
        for i, r in enumerate(raw):
            if not isinstance(r, Mapping):
                raise PricingInvalid(f"rules[{i}] must be an object")
            rid = r.get("id")
            if (
                not isinstance(rid, str)
                or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", rid)
                or rid in seen
            ):
                raise PricingInvalid(f"rules[{i}].id must be a unique short id, got {rid!r}")
            seen.add(rid)
            if r.get("kind") == "bundle":
                bundles.append(_bundle(rid, r))
            else:
                rules.append(_rule(rid, r))
        version = doc.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise PricingInvalid("version must be a whole number >= 0")
        return cls(version, tuple(rules), tuple(bundles))


def _int(r: Mapping[str, Any], key: str, where: str, lo: int, hi: int) -> int | None:
    v = r.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise PricingInvalid(f"{where}.{key} must be a whole number {lo}..{hi}, got {v!r}")
    return v


def _time(r: Mapping[str, Any], key: str, where: str, default: float) -> float:
    v = r.get(key)
    if v is None:
        return default
    if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
        raise PricingInvalid(f"{where}.{key} must be UTC epoch seconds, got {v!r}")
    return float(v)


def _skus(v: Any, where: str) -> frozenset[str]:
    if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
        raise PricingInvalid(f"{where} must be a non-empty list of SKU ids")
    return frozenset(v)


def _rule(rid: str, r: Mapping[str, Any]) -> Rule:
    where, kind = f"rule {rid}", r.get("kind")
    if kind not in KIND_ORDER:
        raise PricingInvalid(f"{where}.kind must be one of {KIND_ORDER + ('bundle',)}, got {kind!r}")
    pct, fixed = _int(r, "percent_off", where, 1, 100), _int(r, "fixed_price", where, 0, 10**9)
    if (pct is None) == (fixed is None):
        raise PricingInvalid(f"{where}: give exactly one of percent_off, fixed_price")
    skus = None if r.get("skus") is None else _skus(r.get("skus"), f"{where}.skus")
    if kind == "time_of_day":
        days = r.get("weekdays", list(range(7)))
        if (
            not isinstance(days, list)
            or not days
            or not all(isinstance(d, int) and 0 <= d <= 6 for d in days)
        ):
            raise PricingInvalid(f"{where}.weekdays must list days 0 (Monday)..6")
        start, end = _minute(r.get("start"), f"{where}.start"), _minute(r.get("end"), f"{where}.end")
        if start == end:
            raise PricingInvalid(f"{where}: start and end are the same time")
        return Rule(rid, kind, skus, pct, fixed, start, end, frozenset(days))
    if kind == "near_expiry":
        hours = r.get("within_h")
        if not isinstance(hours, int | float) or isinstance(hours, bool) or not 0 < hours <= 24 * 30:
            raise PricingInvalid(f"{where}.within_h must be hours in (0, 720], got {hours!r}")
        return Rule(rid, kind, skus, pct, fixed, within_s=float(hours) * 3600)
    lo, hi = _time(r, "valid_from", where, float("-inf")), _time(r, "valid_until", where, float("inf"))
    if hi <= lo:
        raise PricingInvalid(f"{where}: valid_until must be after valid_from")
    return Rule(rid, kind, skus, pct, fixed, valid_from=lo, valid_until=hi)


def _bundle(rid: str, r: Mapping[str, Any]) -> Bundle:
    where = f"rule {rid}"
    groups = r.get("groups")
    if not isinstance(groups, list) or not 2 <= len(groups) <= 5:
        raise PricingInvalid(f"{where}.groups must list 2..5 groups of SKU ids")
    price = _int(r, "price", where, 0, 10**9)
    if price is None:
        raise PricingInvalid(f"{where}.price is required")
    lo, hi = _time(r, "valid_from", where, float("-inf")), _time(r, "valid_until", where, float("inf"))
    if hi <= lo:
        raise PricingInvalid(f"{where}: valid_until must be after valid_from")
    return Bundle(rid, tuple(_skus(g, f"{where}.groups[{i}]") for i, g in enumerate(groups)), price, lo, hi)


def price_item(rules: RuleSet, item: Item, ctx: Context) -> Priced | Expired:
    """One item under the precedence in the module docstring (steps 1-3)."""
    if item.best_before is not None and item.best_before <= ctx.utc:
        return Expired(item.sku_id, item.slot_id, item.best_before)
    best = Priced(item.sku_id, item.slot_id, item.list_price, "")
    for rule in sorted(rules.rules, key=lambda r: (KIND_ORDER.index(r.kind), r.rule_id)):  # tie order
        if rule.applies(item, ctx) and (p := rule.price(item)) < best.unit_price:
            best = Priced(item.sku_id, item.slot_id, p, rule.rule_id)
    return best


def price_basket(rules: RuleSet, items: Sequence[Item], ctx: Context) -> list[Priced | Expired]:
    """Every item (steps 1-3), then the best live bundle over what is left (step 4), repeatedly.
    A bundle's price is spread over its lines (the remainder on the first) so lines sum to it."""
    out = [price_item(rules, it, ctx) for it in items]
    free = {i: p for i, p in enumerate(out) if isinstance(p, Priced)}  # lines no bundle has taken yet
    while True:
        best: tuple[int, Bundle, list[int]] | None = None
        for b in (b for b in rules.bundles if b.live(ctx)):
            pick = _cover(b, free)
            if pick is None:
                continue
            saving = sum(free[i].unit_price for i in pick) - b.price
            if saving > 0 and (best is None or (saving, best[1].rule_id) > (best[0], b.rule_id)):
                best = (saving, b, pick)
        if best is None:
            return out
        _, bundle, pick = best
        share, rest = divmod(bundle.price, len(pick))
        for n, i in enumerate(pick):
            p = free.pop(i)
            out[i] = Priced(p.sku_id, p.slot_id, share + (rest if n == 0 else 0), bundle.rule_id)


def _cover(bundle: Bundle, free: Mapping[int, Priced]) -> list[int] | None:
    """For each group, the dearest free line in it (the customer gets the most off); None if a group is empty.
    `free`: line index -> its price, for the lines no bundle has taken."""
    pick: list[int] = []
    for group in bundle.groups:
        cands = [i for i in sorted(free) if i not in pick and free[i].sku_id in group]
        if not cands:
            return None
        pick.append(max(cands, key=lambda i: (free[i].unit_price, -i)))
    return pick


@dataclass(frozen=True)
class Quote:
    """A price shown to a customer: honoured until `mono_at + ttl_s` on the monotonic clock."""

    priced: Priced
    mono_at: float
    ttl_s: float = 120.0

    def honoured(self, mono_now: float) -> bool:
        return 0 <= mono_now - self.mono_at <= self.ttl_s


def describe(rules: RuleSet) -> list[dict[str, Any]]:
    """The rules as plain dicts for the page and the API."""
    out: list[dict[str, Any]] = [
        {"id": r.rule_id, "kind": r.kind, "percent_off": r.percent_off, "fixed_price": r.fixed_price}
        for r in rules.rules
    ]
    return out + [{"id": b.rule_id, "kind": "bundle", "price": b.price} for b in rules.bundles]

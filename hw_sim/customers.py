"""Seeded take-and-go customers: what one shopper does between door open and door close.

`generate(world, rng)` writes a Scenario (a list of actions) without touching the world;
`apply(world, scenario)` plays it and returns the truth the decision is scored against.
The same world state and seed always give the same scenario.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hw_sim.world import FridgeWorld, load_demo_planogram

KINDS = ("take", "put_back", "swap", "misplace", "look_alike")
LOOK_ALIKES = (("cola", "cola_zero"), ("yogurt_straw", "yogurt_van"), ("tea_peach", "tea_lemon"),
               ("crisps_salt", "crisps_paprika"))

Action = tuple[str, ...]  # ("take", slot) | ("put", slot, sku)


@dataclass(frozen=True)
class Scenario:
    kind: str
    actions: list[Action]


@dataclass(frozen=True)
class Truth:
    """What really happened: the SKUs that left the fridge (net) and every lane's final contents."""

    removed: Counter[str]
    lanes: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _View:
    """A scratch copy of the lanes, so a scenario never asks for an item that is not there."""

    lanes: dict[str, list[str]]
    shelf: dict[str, int]
    home: dict[str, str]
    capacity: dict[str, int]

    def stocked(self, shelf: int | None = None) -> list[str]:
        return sorted(s for s, items in self.lanes.items() if items and (shelf is None or self.shelf[s] == shelf))

    def take(self, slot: str) -> str:
        return self.lanes[slot].pop(0)

    def put(self, slot: str, sku: str) -> None:
        self.lanes[slot].insert(0, sku)


def _view(world: FridgeWorld | Mapping[str, list[str]], planogram: Mapping[str, Any] | None) -> _View:
    if isinstance(world, FridgeWorld):
        lanes = world.snapshot()
        return _View(lanes, {k: v.shelf for k, v in world.lanes.items()},
                     {k: v.home_sku for k, v in world.lanes.items()},
                     {k: v.capacity for k, v in world.lanes.items()})
    doc = planogram or load_demo_planogram()
    slots = {s["slot_id"]: s for s in doc["slots"] if s.get("shelf") is not None and s["slot_id"] in world}
    return _View({k: list(world[k]) for k in slots}, {k: s["shelf"] for k, s in slots.items()},
                 {k: s["sku_id"] for k, s in slots.items()}, {k: s["capacity"] for k, s in slots.items()})


def generate(world: FridgeWorld | Mapping[str, list[str]], rng: random.Random, *, kind: str | None = None,
             planogram: Mapping[str, Any] | None = None) -> Scenario:
    """One customer's actions. `world` is a FridgeWorld or its `snapshot()` (then `planogram` — the
    demo one by default — gives shelves). `kind` forces one of KINDS; a kind the stock cannot support
    (no room to misplace, no look-alike in stock) falls back to a plain take."""
    v = _view(world, planogram)
    kind = kind or rng.choice(KINDS)
    if kind not in KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}; allowed: {KINDS}")
    maker = {"take": _take, "put_back": _put_back, "swap": _swap, "misplace": _misplace,
             "look_alike": _look_alike}[kind]
    actions = maker(v, rng)
    if actions is None:
        return Scenario("take", _take(v, rng) or [])
    return Scenario(kind, actions)


def _take(v: _View, rng: random.Random, n: int | None = None) -> list[Action]:
    n = rng.randint(0, 5) if n is None else n
    actions: list[Action] = []
    for _ in range(n):
        stocked = v.stocked()
        if not stocked:
            break
        slot = rng.choice(stocked)
        v.take(slot)
        actions.append(("take", slot))
    return actions


def _put_back(v: _View, rng: random.Random) -> list[Action] | None:
    """Pick something up, then put it back where it came from (maybe after taking others)."""
    stocked = v.stocked()
    if not stocked:
        return None
    slot = rng.choice(stocked)
    sku = v.take(slot)
    actions: list[Action] = [("take", slot), *_take(v, rng, rng.randint(0, 2))]
    v.put(slot, sku)
    return [*actions, ("put", slot, sku)]


def _swap(v: _View, rng: random.Random) -> list[Action] | None:
    """Change of mind: take A, put A back home, take B from another lane instead."""
    stocked = v.stocked()
    if len(stocked) < 2:
        return None
    a, b = rng.sample(stocked, 2)
    sku = v.take(a)
    v.put(a, sku)
    v.take(b)
    return [("take", a), ("put", a, sku), ("take", b)]


def _misplace(v: _View, rng: random.Random) -> list[Action] | None:
    """Take one item and put it into another lane with room on the same shelf."""
    options = [(x, y) for x in v.stocked() for y in v.lanes
               if y != x and v.shelf[y] == v.shelf[x] and len(v.lanes[y]) < v.capacity[y]]
    if not options:
        return None
    x, y = rng.choice(options)
    sku = v.take(x)
    v.put(y, sku)
    return [("take", x), ("put", y, sku)]


def _look_alike(v: _View, rng: random.Random) -> list[Action] | None:
    """Take from one or both lanes of a look-alike pair (cola/cola_zero, ...)."""
    by_home: dict[str, list[str]] = {}
    for slot in v.stocked():
        by_home.setdefault(v.home[slot], []).append(slot)
    pairs = [(a, b) for a, b in LOOK_ALIKES if a in by_home or b in by_home]
    if not pairs:
        return None
    lanes = [s for sku in rng.choice(pairs) for s in by_home.get(sku, [])]
    actions: list[Action] = []
    for _ in range(rng.randint(1, 3)):
        slot = rng.choice(lanes)
        if v.lanes[slot]:
            v.take(slot)
            actions.append(("take", slot))
    return actions


def apply(world: FridgeWorld, scenario: Scenario) -> Truth:
    """Play the scenario on the world; the truth is the net multiset that left plus the final lanes."""
    before = Counter(i for items in world.snapshot().values() for i in items)
    for action in scenario.actions:
        if action[0] == "take":
            if world.take(action[1]) is None:
                raise ValueError(f"scenario takes from empty lane {action[1]}")
        elif action[0] == "put":
            world.put(action[1], action[2])
        else:
            raise ValueError(f"unknown action {action!r}")
    lanes = world.snapshot()
    after = Counter(i for items in lanes.values() for i in items)
    return Truth(removed=before - after, lanes=lanes)

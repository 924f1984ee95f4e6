"""The physical truth of the simulated fridge: which item lies in which lane, and the door.

Cameras render it, weight shelves weigh it, scripted customers change it. Nothing here knows the
daemon: the planogram is read as a plain JSON document (the same shape the cloud sends).
"""

from __future__ import annotations

import json
import pathlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DATA = pathlib.Path(__file__).parent / "data"
DEMO_PLANOGRAM = DATA / "demo_planogram.json"


def load_demo_planogram() -> dict[str, Any]:
    """The demo catalog+planogram document (24 SKUs, 30 spiral slots, 4 fridge shelves x 5 lanes)."""
    doc: dict[str, Any] = json.loads(DEMO_PLANOGRAM.read_text())
    return doc


@dataclass
class Lane:
    slot_id: str
    shelf: int
    lane: int
    home_sku: str
    capacity: int
    items: list[str] = field(default_factory=list)  # sku ids, front first; may hold misplaced items


class FridgeWorld:
    """Lanes of items on shelves plus the door; thread-safe (the MJPEG server reads from a thread)."""

    def __init__(self, planogram: Mapping[str, Any], fill: float = 1.0) -> None:
        self.sku_weight: dict[str, float] = {s["sku_id"]: float(s.get("weight_g", 0.0)) for s in planogram["skus"]}
        self.lanes: dict[str, Lane] = {}
        for s in planogram["slots"]:
            if s.get("shelf") is None:
                continue
            n = max(0, min(s["capacity"], round(s["capacity"] * fill)))
            self.lanes[s["slot_id"]] = Lane(s["slot_id"], s["shelf"], s["lane"], s["sku_id"], s["capacity"],
                                            [s["sku_id"]] * n)
        self.door_open = False
        self.version = 0  # bumps on every change, so renderers can cache
        self._lock = threading.RLock()

    def shelves(self) -> list[int]:
        return sorted({lane.shelf for lane in self.lanes.values()})

    def lanes_on_shelf(self, shelf: int) -> list[Lane]:
        return sorted((x for x in self.lanes.values() if x.shelf == shelf), key=lambda x: x.lane)

    def shelf_grams(self, shelf: int) -> float:
        """True load on a shelf (the load cell adds its own noise and drift)."""
        with self._lock:
            return sum(self.sku_weight[i] for ln in self.lanes_on_shelf(shelf) for i in ln.items)

    def take(self, slot_id: str) -> str | None:
        """A customer takes the front item of a lane; returns its sku, or None if the lane is empty."""
        with self._lock:
            lane = self.lanes[slot_id]
            if not lane.items:
                return None
            self.version += 1
            return lane.items.pop(0)

    def put(self, slot_id: str, sku_id: str) -> None:
        """Put an item at the front of a lane (a put-back, or a misplaced return when it is not home)."""
        with self._lock:
            self.lanes[slot_id].items.insert(0, sku_id)
            self.version += 1

    def restock(self, slot_id: str, count: int | None = None) -> int:
        """Fill a lane with its home SKU up to capacity (or `count` items); returns items added."""
        with self._lock:
            lane = self.lanes[slot_id]
            target = lane.capacity if count is None else min(lane.capacity, len(lane.items) + count)
            added = max(0, target - len(lane.items))
            lane.items.extend([lane.home_sku] * added)
            self.version += 1
            return added

    def snapshot(self) -> dict[str, list[str]]:
        with self._lock:
            return {k: list(v.items) for k, v in self.lanes.items()}

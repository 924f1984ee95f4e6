"""Bench `checkout --catalogue novel`: take-and-go with products the model never saw, enrolled as an
operator enrolls them, end to end through the daemon.

`bench/run.py checkout` stocks the fridge with the simulator's own products, whose cells the shipped
model reads at a glance (a second look for ~0.4 % of them); an operator's catalogue is read like the
vision bench's never-seen products instead. Here the 20 fridge lanes hold products drawn by
bench/novel (a style hw_sim never uses; the simulator's cameras draw their artwork), look-alike
pairs one small mark apart that weigh the same (two flavours of one brand, so the scales cannot
part them) on neighbouring lanes. The daemon starts with lanes it has no prototype for (the
missing-prototype alarm), then every product is enrolled through the daemon's enrollment service
from `refs` reference photos (PNG, as the Products page uploads them), which must clear the alarm.
Then the same seeded sessions as `checkout`: door close → order latency, exact baskets, false
charges, review.
"""

from __future__ import annotations

import random
from typing import Any

import cv2
import numpy as np

from bench.novel.generator import Design, draw_design, make_catalogue, render_view
from hw_sim.camera.render import Art
from hw_sim.world import load_demo_planogram
from tests.support.rigs.takeandgo import TakeAndGoRig

PHOTO = 96  # px, the side of an operator's reference photo (the recognizer resizes to its input)


def novel_planogram(seed: int, *, pairs: int = 6) -> tuple[dict[str, Any], dict[str, Art], list[Design]]:
    """The demo planogram with every fridge lane holding a never-seen product: `pairs` look-alike
    pairs on neighbouring lanes of one shelf, the rest without a twin. Returns (document, artwork by
    sku, the designs stocked)."""
    doc = load_demo_planogram()
    lanes = sorted((s for s in doc["slots"] if s.get("shelf") is not None), key=lambda s: (s["shelf"], s["lane"]))
    designs = make_catalogue(max(48, len(lanes)), 12, seed=910_000 + seed)
    twins, solos = designs[:2 * pairs], designs[24:]
    rng = random.Random(seed)
    by_shelf: dict[int, list[dict[str, Any]]] = {}
    for s in lanes:
        by_shelf.setdefault(s["shelf"], []).append(s)
    chosen: dict[str, Design] = {}
    queue = [twins[i:i + 2] for i in range(0, len(twins), 2)]
    for shelf_lanes in by_shelf.values():  # a pair on two neighbouring lanes while there is room
        i = 0
        while i + 1 < len(shelf_lanes) and queue and i < 4:
            a, b = queue.pop(0)
            chosen[shelf_lanes[i]["slot_id"]], chosen[shelf_lanes[i + 1]["slot_id"]] = a, b
            i += 2
    rest = iter(solos)
    for s in lanes:
        chosen.setdefault(s["slot_id"], next(rest))
    if queue:
        raise ValueError(f"{pairs} look-alike pairs do not fit the fridge's shelves")
    weights: dict[str, float] = {}
    for d in chosen.values():
        base = weights.get(d.partner or "")
        weights[d.sku_id] = round(base + rng.uniform(-2, 2), 1) if base is not None else round(rng.uniform(80, 600), 1)
    for s in lanes:
        s["sku_id"] = chosen[s["slot_id"]].sku_id
    doc["skus"] += [{"sku_id": d.sku_id, "name": d.sku_id.replace("_", " ").title(), "price": 150 + 10 * (d.seed % 20),
                     "weight_g": weights[d.sku_id], "weight_tol_g": 6.0, "perishable": False} for d in chosen.values()]
    doc["version"] = int(doc.get("version", 1)) + 1
    return doc, {d.sku_id: draw_design(d) for d in chosen.values()}, list(chosen.values())


def reference_photos(d: Design, refs: int, rng: np.random.Generator) -> list[bytes]:
    """`refs` PNG photos of the product as an operator uploads them (the generator's reference shots)."""
    out = []
    for _ in range(refs):
        ok, png = cv2.imencode(".png", render_view(d, PHOTO, rng, hard=False))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        out.append(png.tobytes())
    return out


async def enroll_all(rig: TakeAndGoRig, designs: list[Design], *, refs: int, seed: int,
                     how: str = "photos") -> dict[str, Any]:
    """Enroll every stocked product through the daemon's enrollment service, from `refs` photos
    (`how="photos"`) or from its full lane on the shelf camera (`"capture"`, `vendedge product
    capture`); the missing-prototype check before and after, and the pairs the look-alike alarm names
    against the twin pairs stocked."""
    assert rig.daemon.machine is not None
    svc = rig.daemon.machine.services.enrollment
    if svc is None:
        raise RuntimeError("the daemon has no enrollment service (take-and-go off?)")
    missing_before = list(svc.missing)  # checked at start, before the first session
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    lane = {ln.home_sku: slot for slot, ln in rig.world.lanes.items()}
    for d in designs:
        if how == "capture":
            out = await svc.capture(d.sku_id, lane[d.sku_id], actor="bench")
        else:
            out = await svc.enroll_encoded(d.sku_id, reference_photos(d, refs, rng), actor="bench", source="upload")
    return {"enrolled": len(designs), "how": how, "refs": refs if how == "photos" else out.get("images"),
            "missing_before": len(missing_before),
            "missing_after": sorted(out.get("missing", [])), "gallery_version": out.get("gallery_version"),
            # the look-alike pairs the daemon's alarm says neither camera nor scale can part
            "unparted_pairs": [p["skus"] for p in svc.unparted or []],
            "stocked_twin_pairs": sorted(sorted((d.sku_id, d.partner)) for d in designs if d.partner and d.sku_id < d.partner)}

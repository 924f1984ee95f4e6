"""Look-alikes the machine cannot part (edge/services/lookalike_shelves.py): where the planogram puts
two products the cameras can hardly tell apart, and whether the shelf's scale can."""

from __future__ import annotations

from edge.core.catalog import Planogram
from edge.services.lookalike_shelves import camera_skus, on_shelves
from hw_sim.world import load_demo_planogram


def alike(sku: str) -> dict[str, object]:
    return {"sku_id": sku, "cosine": 0.9, "separation": 4.0}


def test_a_look_alike_on_the_same_shelf_at_the_same_weight_cannot_be_parted() -> None:
    p = Planogram.from_doc(load_demo_planogram())
    assert {"cola", "cola_zero", "energy"} <= camera_skus(p)[0] and "water" in camera_skus(p)[1]
    # cola 352 g and cola_zero 350 g, 6 g tolerance each, both on shelf 0; energy 275 g on shelf 0;
    # water 520 g on shelf 1; "novel" not in the catalogue
    rows = on_shelves(p, "cola", [alike("cola_zero"), alike("energy"), alike("water"), alike("novel")])
    got = {r["sku_id"]: (r["shared_shelves"], r["same_weight"], r["cannot_part"]) for r in rows}
    assert got == {
        "cola_zero": ([0], True, True),
        "energy": ([0], False, False),  # the scale tells them apart
        "water": ([], False, False),  # another shelf: the scale says which shelf lost an item
        "novel": ([], None, False),
    }
    assert rows[0]["separation"] == 4.0  # the report's own fields are kept
    assert on_shelves(None, "cola", [alike("cola_zero")])[0]["cannot_part"] is False  # no planogram yet

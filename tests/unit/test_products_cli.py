"""`vendedge product list` as text (edge/products.py): what a technician reads in a shell."""

from __future__ import annotations

from edge.products import list_lines


def test_list_names_references_lanes_look_alikes_and_what_is_missing() -> None:
    alike = {"sku_id": "kombu_b", "cosine": 0.9, "separation": 4.2, "shared_shelves": [0], "same_weight": True,
             "cannot_part": True}
    out = {
        "version": 3,
        "rows": [
            {"sku_id": "kombu_a", "refs": ["00.png", "01.png", "02.png"], "lanes": ["F1"], "look_alikes": [alike]},
            {"sku_id": "kombu_b", "refs": ["00.png"], "lanes": [],
             "look_alikes": [{**alike, "sku_id": "kombu_a", "shared_shelves": [], "cannot_part": False}]},
            {"sku_id": "cola", "refs": [], "lanes": ["F2"], "look_alikes": []},
        ],
        "missing": [{"sku_id": "tea", "lanes": ["G1", "G2"]}],
    }
    a, b, cola, missing, version = list_lines(out)
    assert a.split()[:5] == ["kombu_a", "3", "refs", "lanes", "F1"]
    assert a.endswith("looks like kombu_b (4.2; same shelf 0, same weight)")
    assert b.endswith("lanes -  looks like kombu_a (4.2)")
    assert "shipped refs" in cola and "looks like" not in cola
    assert missing.split() == ["MISSING", "tea", "lanes", "G1,G2"] and version == "gallery version 3"

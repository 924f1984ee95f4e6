"""The shipped shelf recognizer on freshly rendered frames (test seeds 0-999, never trained on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hw_sim.camera.appearance import APPEARANCES, LOOKALIKE_PAIRS
from hw_sim.camera.render import ShelfRenderer, render_item
from hw_sim.world import FridgeWorld, load_demo_planogram
from vision_models import (
    DEFAULT_MODEL_DIR,
    EMPTY,
    CellDetection,
    CellRoi,
    ModelError,
    Recognizer,
    is_doubtful,
)
from vision_models.preprocess import crop_cells, to_tensor

PLANOGRAM = load_demo_planogram()
NEW_SKU = "kombucha_ginger"  # not in the training set: its packaging comes from the hash fallback


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.load(DEFAULT_MODEL_DIR, threads=1)


def _scene(seed: int) -> FridgeWorld:
    """A fridge after a few customers: gaps, and look-alikes returned into each other's lanes."""
    world = FridgeWorld(PLANOGRAM)
    rng = np.random.default_rng(seed)
    for slot in world.lanes:
        for _ in range(int(rng.integers(0, 3))):
            world.take(slot)
    for a, b in (("F1", "cola_zero"), ("F2", "cola"), ("G3", "tea_lemon"), ("G4", "tea_peach"),
                 ("I1", "yogurt_van"), ("I2", "yogurt_straw")):
        world.take(a)
        world.put(a, b)
    return world


def _truth(world: FridgeWorld, cell: dict) -> str:
    items = world.snapshot()[cell["slot_id"]]
    return items[cell["position"]] if cell["position"] < len(items) else EMPTY


def _shelf_cells(world: FridgeWorld, shelf: int, seed: int, rec: Recognizer, **cond: float):
    r = ShelfRenderer(world, shelf, seed=seed)
    frame = r.render(rng=np.random.default_rng(seed), **cond)
    cells = r.layout()
    dets = rec.recognize(frame, [CellRoi.from_dict(c) for c in cells])
    return [(det, _truth(world, c)) for det, c in zip(dets, cells, strict=True)]


def test_card_states_what_the_model_is_and_how_well_it_does() -> None:
    card = json.loads((DEFAULT_MODEL_DIR / "model_card.json").read_text())
    demo = {s["sku_id"] for s in PLANOGRAM["skus"]}
    assert set(card["labels"]) == demo | {EMPTY}
    assert card["input"]["size"] > 0 and len(card["normalization"]["mean"]) == 3
    ev = card["evaluation"]
    assert ev["cell_accuracy"] >= 0.99 and ev["lookalike_accuracy"] >= 0.97
    assert ev["heldout_seeds"][1] < 1000 <= card["training_data"]["seeds"][0]  # disjoint seed ranges
    assert card["latency"]["batch_ms_p50"] > 0 and card["latency"]["four_shelves_ms_p50"] > 0
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    assert size < 5_000_000


def test_recognizes_200_cells_with_lookalikes_gaps_and_hands(rec: Recognizer) -> None:
    results = []
    for seed in range(7):  # 7 frames x 30 cells, shelves 0..3 in turn
        cond = {"lighting": 0.7 + 0.1 * seed, "noise": 6.0, "occlusion": 0.25 if seed % 2 else 0.0}
        results += _shelf_cells(_scene(seed), seed % 4, seed, rec, **cond)
    results = results[:200]
    wrong = [(t, d.label, round(d.score, 2)) for d, t in results if d.label != t]
    assert len(wrong) <= 2, wrong  # >= 99 % cell accuracy
    lookalike = {s for pair in LOOKALIKE_PAIRS for s in pair}
    assert sum(t in lookalike for _, t in results) >= 30  # the look-alikes really were in the sample
    assert any(t == EMPTY for _, t in results)


def test_detections_follow_the_rois_with_score_and_a_different_runner_up(rec: Recognizer) -> None:
    world = _scene(11)
    r = ShelfRenderer(world, 0, seed=11)
    rois = [CellRoi.from_dict(c) for c in reversed(r.layout())]  # any order in, same order out
    dets = rec.recognize(r.render(rng=np.random.default_rng(11)), rois)
    assert [(d.slot_id, d.position) for d in dets] == [(c.slot_id, c.position) for c in rois]
    snap = world.snapshot()
    for det in dets:
        items = snap[det.slot_id]
        assert det.label == (items[det.position] if det.position < len(items) else EMPTY)
        assert det.runner_up != det.label and det.runner_up in rec.labels
        assert 0.0 <= det.runner_up_score <= det.score <= 1.0 and det.score + det.runner_up_score <= 1.0 + 1e-6


def test_candidates_narrow_the_names_a_cell_can_get(rec: Recognizer) -> None:
    """The daemon names cells only as the products its fridge stocks (and "empty"): a package that
    is not among them gets the nearest candidate, never a product from elsewhere in the gallery."""
    world = _scene(3)
    r = ShelfRenderer(world, 0, seed=3)
    frame = r.render(rng=np.random.default_rng(3), occlusion=0.3)
    rois = [CellRoi.from_dict(c) for c in r.layout()]
    stocked = {s["sku_id"] for s in PLANOGRAM["slots"] if s.get("shelf") is not None}
    free = rec.recognize(frame, rois)
    assert any(d.label not in stocked | {EMPTY} or d.runner_up not in stocked | {EMPTY} for d in free)  # it could
    narrowed = rec.recognize(frame, rois, candidates=stocked)
    assert all({d.label, d.runner_up} <= stocked | {EMPTY} for d in narrowed)
    assert [d.label for d in narrowed if d.quality >= 0.85] == [d.label for d in free if d.quality >= 0.85] != []
    few = rec.recognize(frame, rois, candidates={"cola", "water"})  # F1 holds cola and cola_zero
    assert {d.label for d in few} <= {"cola", "water", EMPTY} and any(d.label == "cola" for d in few)
    assert [d.label for d in rec.recognize(frame, rois, candidates=set())] == [d.label for d in free]  # no choice left


def test_empty_lane_reads_empty(rec: Recognizer) -> None:
    world = FridgeWorld(PLANOGRAM)
    while world.take("H3"):
        pass
    results = _shelf_cells(world, 2, 21, rec, lighting=0.8)
    lane = [d for d, t in results if d.slot_id == "H3"]
    assert [d.label for d in lane] == [EMPTY] * 6


def test_enrolling_a_new_sku_from_five_renders_makes_it_recognizable(rec: Recognizer, tmp_path: Path) -> None:
    assert NEW_SKU not in APPEARANCES and NEW_SKU not in rec.labels
    local = Recognizer.load(DEFAULT_MODEL_DIR)  # keep the shared fixture's gallery untouched
    rng = np.random.default_rng(42)
    local.enroll(NEW_SKU, [render_item(NEW_SKU, 76, rng) for _ in range(5)])
    assert NEW_SKU in local.labels
    results = []
    for seed in (31, 32, 33):
        world = FridgeWorld(PLANOGRAM)
        world.lanes["G5"].items = [NEW_SKU] * 6  # the new product in the juice lane
        world.lanes["G2"].items[0] = NEW_SKU
        results += _shelf_cells(world, 1, seed, local, lighting=0.8 + 0.15 * (seed - 31), noise=5.0)
    new_cells = [d.label for d, t in results if t == NEW_SKU]
    assert len(new_cells) == 21 and new_cells.count(NEW_SKU) >= 20
    assert sum(d.label == t for d, t in results) >= 88  # the old products are still recognized (of 90)
    local.save_gallery(tmp_path / "gallery.npz")
    for f in ("model.onnx", "model_card.json"):
        shutil.copy(DEFAULT_MODEL_DIR / f, tmp_path / f)
    assert NEW_SKU in Recognizer.load(tmp_path).labels  # enrollment survives a restart


def _copy_model(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    return d


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    d = _copy_model(tmp_path)
    (d / "model.onnx").unlink()
    with pytest.raises(ModelError, match="model"):
        Recognizer.load(d)
    with pytest.raises(ModelError):
        Recognizer.load(tmp_path / "does-not-exist")


def test_corrupt_onnx_is_a_model_error(tmp_path: Path) -> None:
    d = _copy_model(tmp_path)
    blob = bytearray((d / "model.onnx").read_bytes())
    (d / "model.onnx").write_bytes(bytes(blob[: len(blob) // 2]))  # truncated copy
    with pytest.raises(ModelError, match="sha256"):
        Recognizer.load(d)
    card = json.loads((d / "model_card.json").read_text())
    del card["onnx"]["sha256"]  # without the checksum, onnxruntime itself must refuse it
    (d / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="onnxruntime"):
        Recognizer.load(d)


@pytest.mark.parametrize("damage", ["not json", "missing labels", "bad std", "gallery dim"])
def test_bad_card_or_gallery_is_a_model_error(tmp_path: Path, damage: str) -> None:
    d = _copy_model(tmp_path)
    path = d / "model_card.json"
    card = json.loads(path.read_text())
    if damage == "not json":
        path.write_text("{ this is not json")
    elif damage == "missing labels":
        del card["labels"]
        path.write_text(json.dumps(card))
    elif damage == "bad std":
        card["normalization"]["std"] = [0.2, 0.0, 0.2]
        path.write_text(json.dumps(card))
    else:
        np.savez(d / "gallery.npz", labels=np.array(["cola"]), prototypes=np.ones((1, 7), np.float32))
    with pytest.raises(ModelError):
        Recognizer.load(d)


def test_roi_outside_the_frame_is_refused(rec: Recognizer) -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    assert rec.recognize(frame, []) == []
    with pytest.raises(ValueError, match="outside"):
        rec.recognize(frame, [CellRoi("F1", 0, 700, 10, 100, 70)])


def test_similarity_tells_a_clean_view_from_a_hand_over_the_cells(rec: Recognizer) -> None:
    """The softmax score saturates under a hand; the similarity to the label's prototype does not,
    and fusion relies on it (FusionParams.min_quality) to doubt a product read on a poor view."""
    world = _scene(13)
    r = ShelfRenderer(world, 3, seed=13)
    rois = [CellRoi.from_dict(c) for c in r.layout()]
    clean = rec.recognize(r.render(rng=np.random.default_rng(13), occlusion=0.0), rois)
    hands = rec.recognize(r.render(rng=np.random.default_rng(13), occlusion=0.35), rois)
    assert min(d.similarity for d in clean) > 0.9
    assert all(-1.0 <= d.similarity <= 1.0 for d in hands)
    assert np.median([d.similarity for d in hands]) < np.median([d.similarity for d in clean])
    assert min(d.similarity for d in hands) < 0.85  # some cells really are in doubt


def test_the_cpus_int8_kernels_give_the_exact_embeddings(rec: Recognizer) -> None:
    """onnxruntime's fused int8 kernels against the same QDQ graph run unfused (dequantize, float
    conv): on AVX2 CPUs without VNNI, int8 weights saturate and shift embeddings (0.67 cosine seen),
    which is why shelf-v2 stores its weights unsigned."""
    import onnxruntime as ort

    world = _scene(5)
    crops = np.concatenate([crop_cells(r.render(rng=np.random.default_rng(5)), [CellRoi.from_dict(c) for c in
                                                                                 r.layout()], rec.size)
                            for r in (ShelfRenderer(world, s, seed=5) for s in range(4))])
    x = to_tensor(crops, rec.card["normalization"])
    runs = []
    for exact in (False, True):
        opts = ort.SessionOptions()
        if exact:
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(str(DEFAULT_MODEL_DIR / "model.onnx"), opts,
                                       providers=["CPUExecutionProvider"])
        e = session.run(["embedding"], {"crops": x})[0]
        runs.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    cosine = (runs[0] * runs[1]).sum(axis=1)
    assert len(cosine) == 120 and cosine.min() > 0.99, (float(np.median(cosine)), float(cosine.min()))


def test_margin_is_the_cosine_gap_to_the_runner_up_and_doubt_uses_it(rec: Recognizer) -> None:
    world = _scene(11)
    cells = _shelf_cells(world, 0, 11, rec)
    for det, _ in cells:
        assert 0.0 <= det.margin <= 2.0
        # the margin agrees with the softmax scores: log(p1/p2) / scale = cos1 - cos2
        assert abs(np.log(det.score / det.runner_up_score) / rec.scale - det.margin) < 2e-3
    product = next(d for d, _ in cells if d.label != EMPTY)
    assert not is_doubtful(product, min_quality=0.0, min_margin=0.0)
    assert is_doubtful(product, min_quality=0.0, min_margin=product.margin + 0.01)
    assert is_doubtful(product, min_quality=product.similarity + 0.01, min_margin=0.0)
    empty = CellDetection("A1", 0, EMPTY, 1.0, "cola", 0.0, 0.1, 0.0)
    assert not is_doubtful(empty, min_quality=0.99, min_margin=0.5)

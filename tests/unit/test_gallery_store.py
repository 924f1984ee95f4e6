"""The gallery as versioned operator state: seed, enroll, save, fall back, list missing SKUs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hw_sim.camera.render import render_item
from vision_models import DEFAULT_MODEL_DIR, CellRoi, Recognizer
from vision_models.gallery import CURRENT, PREVIOUS, GalleryStore, missing_prototypes

SEED = DEFAULT_MODEL_DIR / "gallery.npz"


def test_enrolled_sku_survives_a_restart_and_the_seed_is_untouched(tmp_path: Path) -> None:
    seed_bytes = SEED.read_bytes()
    store = GalleryStore(tmp_path / "vision", seed=SEED)
    gallery, version = store.load()
    assert version == 0 and "kombucha_ginger" not in gallery.snapshot()[0]
    rec = Recognizer.load(DEFAULT_MODEL_DIR, gallery=gallery)
    rng = np.random.default_rng(3)
    rec.enroll("kombucha_ginger", [render_item("kombucha_ginger", 64, rng) for _ in range(3)])
    assert store.save(rec.gallery) == 1
    again, version = GalleryStore(tmp_path / "vision", seed=SEED).load()
    assert version == 1 and "kombucha_ginger" in again.snapshot()[0]
    rec2 = Recognizer.load(DEFAULT_MODEL_DIR, gallery=again)
    img = render_item("kombucha_ginger", 64, np.random.default_rng(99))
    assert rec2.recognize(img, [CellRoi("A1", 0, 0, 0, 64, 64)])[0].label == "kombucha_ginger"
    assert SEED.read_bytes() == seed_bytes


def test_previous_version_is_kept_and_used_when_the_current_is_corrupt(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path, seed=SEED)
    gallery, _ = store.load()
    rec = Recognizer.load(DEFAULT_MODEL_DIR, gallery=gallery)
    assert store.save(rec.gallery) == 1
    rec.enroll("new_a", [render_item("new_a", 64, np.random.default_rng(1))])
    assert store.save(rec.gallery) == 2
    assert (tmp_path / PREVIOUS).exists()
    (tmp_path / CURRENT).write_bytes(b"not a gallery")
    back, version = store.load()
    assert version == 1 and "new_a" not in back.snapshot()[0]
    assert not list(tmp_path.glob(".gallery-*"))  # no temp files left behind


def test_missing_prototypes_lists_planogram_skus_the_gallery_cannot_name() -> None:
    labels = ["cola", "water", "empty"]
    assert missing_prototypes(["cola", "kombucha", "water", "kombucha", "", "empty", "abc"], labels) == \
        ["abc", "kombucha"]
    assert missing_prototypes(["cola"], labels) == []


def test_radii_are_stored_with_their_prototypes_and_old_files_without_them_still_load(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path, seed=SEED)
    gallery, _ = store.load()
    dim = gallery.dim
    gallery.put("a", np.eye(dim, dtype=np.float32)[0], 0.81)
    gallery.put("b", np.eye(dim, dtype=np.float32)[1], 0.77)
    gallery.put("a", np.eye(dim, dtype=np.float32)[2], 0.9)  # replaced: its radius too
    assert gallery.remove("cola")
    store.save(gallery)
    back, _ = store.load()
    labels, protos, radius = back.entries()
    rad = dict(zip(labels, radius.tolist(), strict=True))
    assert rad["a"] == np.float32(0.9) and rad["b"] == np.float32(0.77) and "cola" not in rad
    assert np.isnan(rad["milk"])  # seed labels carry no radius
    assert np.array_equal(protos[labels.index("a")], np.eye(dim, dtype=np.float32)[2])
    old = tmp_path / "old.npz"  # a gallery written before radii existed
    np.savez(old, labels=np.array(["x", "y"]), prototypes=np.eye(2, dim, dtype=np.float32))
    (tmp_path / CURRENT).write_bytes(old.read_bytes())
    legacy, _ = store.load()
    assert legacy.snapshot()[0] == ("x", "y") and np.isnan(legacy.entries()[2]).all()

"""Product enrollment on a real ledger (SQLite) with the shipped ONNX model (onnxruntime): the
gallery in the state directory, versions and the previous one kept, a gallery written by another
process picked up, prototypes of another model rebuilt from the kept references, the one alarm
listing camera-lane SKUs without a prototype (and their lanes read by weight only), and the
cloud command `enroll_product` through the real command inbox (at most once, bounded, validated)."""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import json

import cv2
import numpy as np
import pytest

from bench.novel.generator import make_catalogue, render_view
from edge.core.catalog import Planogram, Sku
from edge.core.ports import Command
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.cloud import CommandInbox
from edge.services.enrollment import (
    ALARM_KEY,
    MAX_IMAGES,
    EnrollError,
    EnrollmentService,
    ProductGallery,
    decode_image,
    image_dims,
)
from edge.services.evidence import Capturer
from edge.services.lookalike_shelves import ALARM_KEY as UNPARTED
from edge.services.lookalike_shelves import sync_alarm
from hw_sim.world import load_demo_planogram
from vision_models import DEFAULT_MODEL_DIR, CellRoi, Recognizer
from vision_models.augment import ENROLLMENT_RECIPE
from vision_models.gallery import CURRENT, GalleryStore
from vision_models.pairs import directions

VIEW = 64


@pytest.fixture(scope="module")
def products():
    """Two never-seen products (the bench's evaluation-only style) with 3 reference views each."""
    cat = make_catalogue(6, 0, seed=4242)
    rng = np.random.default_rng(7)
    return {d.sku_id: [render_view(d, VIEW, rng, hard=False) for _ in range(4)] for d in cat[:2]}


def png(img: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(".png", img)
    assert ok
    return enc.tobytes()


def read_as(rec: Recognizer, img: np.ndarray) -> str:
    (det,) = rec.recognize(np.ascontiguousarray(img), [CellRoi("X1", 0, 0, 0, img.shape[1], img.shape[0])])
    return det.label


def gallery_in(tmp_path) -> ProductGallery:
    g = ProductGallery.for_model(tmp_path, Recognizer.load(DEFAULT_MODEL_DIR), DEFAULT_MODEL_DIR)
    g.open()
    return g


def test_enroll_writes_versions_keeps_refs_and_never_touches_the_seed(tmp_path, products):
    seed_bytes = (DEFAULT_MODEL_DIR / "gallery.npz").read_bytes()
    g = gallery_in(tmp_path)
    assert g.version == 0 and "cola" in g.labels()
    (sku, views), (other, oviews) = list(products.items())
    assert g.enroll(sku, views[:3]) == 1
    assert g.enroll(other, oviews[:3]) == 2
    assert read_as(g.rec, views[3]) == sku and read_as(g.rec, oviews[3]) == other
    assert g.ref_names(sku) == ["00.png", "01.png", "02.png"] and g.ref_path(sku, "00.png") is not None
    assert g.ref_path(sku, "../../gallery.npz") is None and g.ref_path("../x", "00.png") is None
    store = GalleryStore(tmp_path / "vision", seed=DEFAULT_MODEL_DIR / "gallery.npz")
    gal, version = store.load()
    assert version == 2 and {sku, other} <= set(gal.snapshot()[0])
    assert (tmp_path / "vision" / "gallery.prev.npz").exists()
    assert g.remove(sku) == 3 and sku not in g.labels() and g.ref_names(sku) == []
    with pytest.raises(EnrollError) as err:
        g.remove(sku)
    assert err.value.reason == "unknown_sku"
    assert (DEFAULT_MODEL_DIR / "gallery.npz").read_bytes() == seed_bytes


def test_a_product_enrolled_under_a_second_sku_is_reported_as_its_look_alike(tmp_path, products):
    """Same package, two SKUs: the pair check cannot tell them apart, and the report says so, both
    ways, from enrollment on, after a reopen, and no more once one is removed."""
    g = gallery_in(tmp_path)
    (sku, views), (other, oviews) = list(products.items())
    g.enroll(sku, views[:3])
    g.enroll(other, oviews[:3])
    assert g.look_alikes(sku) == [] and g.look_alikes(other) == []  # two different packages
    g.enroll("copy", views[:3])
    (alike,) = g.look_alikes(sku)
    assert alike["sku_id"] == "copy" and alike["separation"] < 1 and alike["cosine"] > 0.99
    assert [a["sku_id"] for a in g.look_alikes("copy")] == [sku] and g.look_alikes(other) == []
    assert [a["sku_id"] for a in gallery_in(tmp_path).look_alikes(sku)] == ["copy"]  # measured on open too
    g.remove("copy")
    assert g.look_alikes(sku) == []


def test_a_gallery_written_by_another_process_is_picked_up(tmp_path, products):
    daemon, cli = gallery_in(tmp_path), gallery_in(tmp_path)
    sku, views = next(iter(products.items()))
    assert not daemon.reload_if_changed()
    cli.enroll(sku, views[:3])
    assert daemon.reload_if_changed() and sku in daemon.labels() and daemon.version == 1
    # a write in between never loses the other writer's product: each update starts from the newest file
    other, oviews = list(products.items())[1]
    daemon.enroll(other, oviews[:3])
    assert {sku, other} <= set(
        GalleryStore(tmp_path / "vision", seed=DEFAULT_MODEL_DIR / "gallery.npz").load()[0].snapshot()[0]
    )


def _stored_as(tmp_path, products, make, model: str) -> tuple[ProductGallery, str, list]:
    """One product enrolled, then the stored gallery replaced by `make(gallery)`
    tagged `model`, and the gallery opened again: it must be rebuilt and saved under this model's id."""
    g = gallery_in(tmp_path)
    sku, views = next(iter(products.items()))
    g.enroll(sku, views[:3])
    store = GalleryStore(tmp_path / "vision", seed=DEFAULT_MODEL_DIR / "gallery.npz")
    store.save(make(store.load()[0]), model=model)
    again = gallery_in(tmp_path)
    assert again.version == 3
    with np.load(tmp_path / "vision" / CURRENT) as z:
        assert str(z["model"]) == again.rec.model_id
    return again, sku, views


def test_prototypes_of_another_model_are_rebuilt_from_the_kept_references(tmp_path, products):
    def junk(gal):  # what another model's vectors look like here
        labels, mat = gal.snapshot()
        return type(gal)(list(labels), np.roll(mat, 1, axis=1))

    again, sku, views = _stored_as(tmp_path, products, junk, "another-model")
    assert read_as(again.rec, views[3]) == sku and read_as(again.rec, views[0]) == sku


def test_a_gallery_made_with_other_enrollment_views_is_enrolled_again(tmp_path, products):
    sha = json.loads((DEFAULT_MODEL_DIR / "model_card.json").read_text())["onnx"]["sha256"]
    # a complete gallery (radius, spread) of this very model, tagged as galleries were before the
    # enrollment views were part of the id: only the tag says its views may be other ones
    again, sku, views = _stored_as(tmp_path, products, lambda gal: gal, sha)
    assert again.rec.model_id == f"{sha}+{ENROLLMENT_RECIPE}"
    assert read_as(again.rec, views[3]) == sku
    assert gallery_in(tmp_path).version == 3  # opened as is from now on


def test_products_enrolled_before_radii_existed_are_enrolled_again_from_their_references(tmp_path, products):
    g = gallery_in(tmp_path)
    (sku, views), (other, oviews) = list(products.items())
    g.enroll(sku, views[:3])
    store = GalleryStore(tmp_path / "vision", seed=DEFAULT_MODEL_DIR / "gallery.npz")
    gal, _ = store.load()
    labels, mat, radius = gal.entries()
    assert np.isfinite(radius[labels.index(sku)])
    old = type(gal)(list(labels), mat)  # an older gallery file: no radius, single-view prototype
    old.put(sku, g.rec.embed(views[:3]).mean(axis=0))
    store.save(old, model=g.rec.model_id)
    again = gallery_in(tmp_path)
    assert again.version == 3
    labels, _, radius = again.rec.gallery.entries()
    assert np.isfinite(radius[labels.index(sku)]) and np.isnan(radius[labels.index("cola")])
    assert gallery_in(tmp_path).version == 3  # nothing stale any more: opened as is
    assert read_as(again.rec, views[3]) == sku and other not in labels


def test_products_enrolled_before_the_pair_check_get_their_spread_from_their_references(tmp_path, products):
    g = gallery_in(tmp_path)
    (sku, views), _ = list(products.items())
    g.enroll(sku, views[:3])
    store = GalleryStore(tmp_path / "vision", seed=DEFAULT_MODEL_DIR / "gallery.npz")
    gal, _ = store.load()
    spread = gal.spread(sku)
    assert spread is not None
    labels, mat, radius = gal.entries()
    store.save(type(gal)(list(labels), mat, radius), model=g.rec.model_id)  # a file from before: radii only
    again = gallery_in(tmp_path)
    assert again.version == 3  # rebuilt from the kept references and saved
    rebuilt = again.rec.gallery.spread(sku)
    assert rebuilt is not None and np.allclose(rebuilt[0], spread[0], atol=0.02)  # the kept crops are resized
    assert again.rec.gallery.spread("cola") is None  # the shipped seed: nothing kept to rebuild it from
    assert gallery_in(tmp_path).version == 3
    assert rebuilt.scale > 0
    gal, _ = store.load()  # a file from 2.4.0: spreads without their scale (the open-set check's)
    labels, mat, radius = gal.entries()
    i = labels.index(sku)
    gal.put(sku, mat[i], float(radius[i]), (rebuilt.mean, directions(rebuilt).astype(np.float16)))
    assert np.isnan(gal.spread(sku).scale)
    store.save(gal, model=g.rec.model_id)
    assert gallery_in(tmp_path).version == 5 and gallery_in(tmp_path).rec.gallery.spread(sku).scale > 0


def test_images_are_bounded_before_decoding():
    img = np.full((40, 60, 3), 128, np.uint8)
    ok, jpg = cv2.imencode(".jpg", img)
    assert image_dims(jpg.tobytes()) == (60, 40) and image_dims(png(img)) == (60, 40)
    assert decode_image(png(img)).shape == (40, 60, 3)
    wide = png(np.zeros((10, 5000, 3), np.uint8))
    for blob, reason in (
        (b"", "bad_image"),
        (b"GIF89a" + bytes(40), "bad_image"),
        (wide, "bad_image"),
        (png(img)[:30], "bad_image"),
        (b"\x89PNG" + bytes(3 * 1024 * 1024), "image_too_large"),
    ):
        with pytest.raises(EnrollError) as err:
            decode_image(blob)
        assert err.value.reason == reason, blob[:8]


@pytest.fixture
async def service(tmp_path):
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"))
    doc = load_demo_planogram()
    async with db.tx() as tx:
        await repo.apply_planogram(tx, Planogram.from_doc(doc), "test")
    executor = concurrent.futures.ThreadPoolExecutor(1)
    g = gallery_in(tmp_path)
    capturer = Capturer({}, {}, g.rec, executor)
    svc = EnrollmentService(db, g, capturer, executor)
    yield svc
    executor.shutdown()
    await db.close()


async def active_alarm(db):
    row = await db.fetchone("SELECT active, message, data FROM alarms WHERE alarm_key=?", (ALARM_KEY,))
    return None if row is None or not row["active"] else (row["message"], json.loads(row["data"]))


async def with_new_products(db, mapping: dict[str, str]) -> Planogram:
    """The current planogram with lanes given to products the gallery has never seen."""
    p = await repo.current_planogram(db)
    skus = dict(p.skus)
    slots = dict(p.slots)
    for slot, sku in mapping.items():
        skus[sku] = Sku(sku, sku.title(), p.skus[slots[slot].sku_id].price, 300.0, 5.0)
        slots[slot] = dataclasses.replace(slots[slot], sku_id=sku)
    new = dataclasses.replace(p, version=p.version + 1, skus=skus, slots=slots)
    async with db.tx() as tx:
        await repo.apply_planogram(tx, new, "test")
    return new


async def test_one_alarm_lists_the_products_without_prototype_and_their_lanes_go_weight_only(
    service, products, capfd
):
    db = service.db
    assert await service.check() == [] and await active_alarm(db) is None and service.lanes == {}
    a, b = list(products)
    p = await with_new_products(db, {"F1": a})
    assert await service.check() == [a]
    message, data = await active_alarm(db)
    shelf = p.slots["F1"].shelf
    assert data == {"skus": [a], "lanes": {"F1": a}, "shelves": [shelf]} and f"{a} (F1)" in message
    assert service.lanes == {"F1": a}
    assert await service.check() == [a]  # unchanged: still one alarm, nothing new written
    n = (await db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE kind='alarm'"))["n"]
    await service.check()
    assert (await db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE kind='alarm'"))["n"] == n
    await with_new_products(db, {"G1": b})  # the list grows: the alarm is raised again with both
    assert await service.check() == sorted([a, b])
    assert (await active_alarm(db))[1]["skus"] == sorted([a, b])
    out = await service.enroll_encoded(a, [png(v) for v in products[a][:3]], actor="tech", source="web")
    assert out["missing"] == [b] and (await active_alarm(db))[1]["skus"] == [b]
    capfd.readouterr()
    await service.enroll(b, products[b][:3], actor="tech", source="web")
    assert await active_alarm(db) is None and service.lanes == {} and service.missing == []
    # the last one enrolled: news (info), not a warning with nothing in it. The log goes to stdout or
    # stderr as the suite's structlog set-up has it, as JSON or for a terminal, info filtered or not
    said = [line for line in "\n".join(capfd.readouterr()).splitlines() if "products_without_prototype" in line]
    assert all("products_without_prototype_cleared" in line and "warn" not in line for line in said), said
    kinds = [r["kind"] for r in await db.fetchall("SELECT kind FROM events WHERE kind LIKE 'product_%'")]
    assert kinds == ["product_enrolled", "product_enrolled"]


async def test_the_run_loop_notices_a_planogram_change(service, products):
    import asyncio

    service.poll_s = 0.05
    await service.check()
    task = asyncio.create_task(service.run())
    try:
        a = next(iter(products))
        await with_new_products(service.db, {"H1": a})
        async with asyncio.timeout(5):
            while await active_alarm(service.db) is None:
                await asyncio.sleep(0.05)
        assert (await active_alarm(service.db))[1]["skus"] == [a]
    finally:
        task.cancel()


async def test_the_service_tells_of_a_look_alike_in_its_answer_event_and_products_page(service, products):
    sku, views = next(iter(products.items()))
    first = await service.enroll(sku, views[:3], actor="tech", source="web")
    assert first["look_alikes"] == []
    second = await service.enroll("copy", views[:3], actor="tech", source="web")
    assert [a["sku_id"] for a in second["look_alikes"]] == [sku]
    ev = await service.db.fetchone("SELECT data FROM events WHERE kind='product_enrolled' ORDER BY event_id DESC")
    assert json.loads(ev["data"])["look_alikes"] == second["look_alikes"]
    rows = {r["sku_id"]: r for r in service.products(await repo.current_planogram(service.db))["rows"]}
    assert [a["sku_id"] for a in rows[sku]["look_alikes"]] == ["copy"] and rows["cola"]["look_alikes"] == []
    assert rows[sku]["look_alikes"][0]["cannot_part"] is False  # "copy" is in no lane


async def test_look_alikes_on_one_shelf_at_one_weight_are_told_apart_by_nothing(service, products):
    sku, views = next(iter(products.items()))
    await with_new_products(service.db, {"F1": sku, "F2": "twin"})  # shelf 0, both 300 g +- 5 g
    await service.enroll(sku, views[:3], actor="tech", source="web")
    out = await service.enroll("twin", views[:3], actor="tech", source="web")
    (alike,) = out["look_alikes"]
    assert (alike["sku_id"], alike["shared_shelves"], alike["same_weight"], alike["cannot_part"]) == (sku, [0], True, True)
    rows = {r["sku_id"]: r for r in service.products(await repo.current_planogram(service.db))["rows"]}
    assert rows[sku]["look_alikes"][0]["cannot_part"] is True
    pair = {"skus": sorted([sku, "twin"]), "shelves": [0]}
    assert (await unparted_alarm(service.db))["pairs"] == [pair]
    raised = await service.db.fetchone("SELECT COUNT(*) AS n FROM events WHERE kind='alarm_raised'")
    await service.check()  # nothing changed: not raised again
    assert (await service.db.fetchone("SELECT COUNT(*) AS n FROM events WHERE kind='alarm_raised'"))["n"] == raised["n"]
    await with_new_products(service.db, {"F2": "cola", "G1": "twin"})  # apart: shelf 1 weighs it
    await service.check()
    rows = {r["sku_id"]: r for r in service.products(await repo.current_planogram(service.db))["rows"]}
    assert rows[sku]["look_alikes"][0]["cannot_part"] is False and rows[sku]["look_alikes"][0]["sku_id"] == "twin"
    assert await unparted_alarm(service.db) is None
    # an alarm an earlier run left active is cleared by the first check that finds nothing (a restart)
    await sync_alarm(service.db, [pair], None)
    assert await unparted_alarm(service.db) == {"pairs": [pair]}
    await sync_alarm(service.db, [], None)
    assert await unparted_alarm(service.db) is None


async def unparted_alarm(db):
    row = await db.fetchone("SELECT active, data FROM alarms WHERE alarm_key=?", (UNPARTED,))
    return json.loads(row["data"]) if row is not None and row["active"] else None


async def test_enroll_product_cloud_command_is_validated_bounded_and_applied_once(service, products):
    inbox = CommandInbox(service.db)
    inbox.register("enroll_product", service.command)
    sku, views = next(iter(products.items()))
    good = {"sku_id": sku, "images": [base64.b64encode(png(v)).decode() for v in views[:3]]}
    res = await inbox.handle(Command("c-1", "enroll_product", good, "2026-01-01T00:00:00Z"))
    assert res.status == "ok" and res.detail["gallery_version"] == 1 and res.detail["images"] == 3
    assert res.detail["look_alikes"] == []
    again = await inbox.handle(Command("c-1", "enroll_product", good, "2026-01-01T00:00:00Z"))
    assert again.status == "duplicate" and service.gallery.version == 1
    assert read_as(service.gallery.rec, views[3]) == sku
    bad = [
        ({"sku_id": "../etc", "images": good["images"]}, "bad_sku"),
        ({"sku_id": "x1", "images": []}, "bad_images"),
        ({"sku_id": "x1", "images": good["images"][:1] * (MAX_IMAGES + 1)}, "bad_images"),
        ({"sku_id": "x1", "images": ["not base64!"]}, "bad_images"),
        ({"sku_id": "x1", "images": [base64.b64encode(b"GIF89a....").decode()]}, "bad_image"),
        ({"sku_id": "x1", "images": ["A" * (2 * 1024 * 1024 + 4)]}, "too_large"),
        ({"sku_id": "x1", "images": "abc"}, "bad_images"),
    ]
    for i, (args, reason) in enumerate(bad):
        res = await inbox.handle(Command(f"bad-{i}", "enroll_product", args, "2026-01-01T00:00:00Z"))
        assert (res.status, res.detail.get("reason")) == ("rejected", reason), (args.get("sku_id"), res)
    assert service.gallery.version == 1 and "x1" not in service.gallery.labels()

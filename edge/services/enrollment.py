"""Product enrollment: reference images -> a prototype in the machine's gallery, and the check that
every product the shelf cameras must name has one.

The gallery lives in ``<data_dir>/vision`` (`vision_models.gallery.GalleryStore`: versioned, written
atomically, the previous version kept); the model's shipped gallery is only the seed. The reference
crops are kept beside it (``vision/refs/<sku>/NN.png``) so the Products page can show them and a new
model can embed them again (prototypes of one model mean nothing to another).

Three ways in, one code path (`ProductGallery`): ``vendedge product enroll|capture|remove|list``, the
Products page, and the signed cloud command ``enroll_product``. The daemon notices a gallery written
by the CLI within a second (`EnrollmentService.run`). The checks on SKU ids and uploaded images
live in `edge.services.enroll_images`. A prototype comes with its radius (`Recognizer.reference`:
the spread of the SKU's own references), which the recognizer's per-SKU doubt reads.

At start and on every planogram or gallery change, the SKUs of camera lanes without a prototype raise
ONE alarm (``vision_missing_prototypes``) listing them and their lanes. Only those lanes lose vision:
take-and-go records the list per session and fusion ignores their cells and decides them by weight
(the shelf's delta less what vision saw on the other lanes; ambiguous -> review), so a product the
recognizer cannot name is never silently read as another one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from edge.core.catalog import Planogram
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.enroll_images import (
    MAX_IMAGES,
    SKU_RE,
    EnrollError,
    check_sku,
    decode_image,
    image_dims,
)
from edge.services.lookalike_shelves import camera_skus, on_shelves, sync_alarm, unparted
from vision_models.enroll import Gallery
from vision_models.gallery import GalleryStore, missing_prototypes
from vision_models.lookalike import LookAlike, of_recognizer
from vision_models.pairs import Spread
from vision_models.preprocess import resize_square, square_crop
from vision_models.recognizer import GALLERY_FILE, Recognizer
from vision_models.types import EMPTY, CellRoi

log = structlog.get_logger(__name__)

# image checks live in edge.services.enroll_images; importers of this module keep these names
__all__ = ["ALARM_KEY", "MAX_IMAGES", "EnrollError", "EnrollmentService", "ProductGallery", "camera_skus",
           "check_sku", "decode_image", "image_dims", "lane_crops"]
MAX_COMMAND_B64 = 2 * 1024 * 1024  # all images of one cloud command, base64 characters

REF_RE = re.compile(r"^[0-9]{2}\.png$")
REF_SIDE = 128  # side of a kept reference crop
ALARM_KEY = ALARM_KIND = "vision_missing_prototypes"


class ProductGallery:
    """The machine's gallery on disk bound to one loaded recognizer (blocking: run in an executor)."""

    def __init__(self, directory: str | Path, recognizer: Recognizer, seed: str | Path) -> None:
        self.dir = Path(directory)
        self.rec = recognizer
        self.store = GalleryStore(self.dir, seed=seed)
        self.refs = self.dir / "refs"
        self.version = 0
        self._stamp = (0, 0)
        self._alikes: dict[str, list[LookAlike]] = {}

    @classmethod
    def for_model(cls, data_dir: str | Path, recognizer: Recognizer, model_dir: str | Path) -> ProductGallery:
        return cls(Path(data_dir) / "vision", recognizer, Path(model_dir) / GALLERY_FILE)

    def open(self) -> int:
        """Load the newest gallery into the recognizer; one embedded by another model is rebuilt
        from the kept reference crops (on the shipped seed), and products enrolled before prototypes
        had a radius or a spread with its scale (the pair and open-set checks) are enrolled again from theirs. Returns the version in use."""
        with self.store.locked():
            gallery, version, model = self.store.load_tagged()
            stale = self._ref_skus()
            if version and model != self.rec.model_id:
                log.warning("gallery_model_changed", stored=model[:12], model=self.rec.model_id[:12])
                gallery, _, _ = GalleryStore(self.dir / "none", seed=self.store.seed).load_tagged()
            else:
                labels, _, radius = gallery.entries()
                stale = [s for s in stale if s in labels and (not np.isfinite(radius[labels.index(s)])
                                                              or not _has_scale(gallery.spread(s)))]
            if version and stale:
                for sku in stale:
                    gallery.put(sku, *self.rec.reference(self._read_refs(sku)))
                version = self.store._save(gallery, self.rec.model_id)
            self._use(gallery, version)
        return version

    def reload_if_changed(self) -> bool:
        """Pick up a gallery another process (the CLI) wrote; True when it did."""
        if self.store.stamp() == self._stamp:
            return False
        self.open()
        return True

    def enroll(self, sku_id: str, images: Sequence[np.ndarray]) -> int:
        """Replace `sku_id`'s references with `images` (BGR) and its prototype; returns the version."""
        check_sku(sku_id)
        if not 1 <= len(images) <= MAX_IMAGES:
            raise EnrollError("bad_images", f"{len(images)} reference images (1..{MAX_IMAGES})")
        ref = self.rec.reference(list(images))
        crops = [resize_square(im, REF_SIDE) for im in images]
        with self.store.locked():
            gallery, _ = self.store.load()
            gallery.put(sku_id, *ref)
            self._write_refs(sku_id, crops)
            self._use(gallery, self.store._save(gallery, self.rec.model_id))
        log.info("product_enrolled", sku=sku_id, images=len(images), version=self.version)
        if alike := self.look_alikes(sku_id):
            log.warning("product_looks_alike", sku=sku_id, look_alikes=alike)
        return self.version

    def _use(self, gallery: Gallery, version: int) -> None:
        """Give the recognizer `gallery` (saved as `version`) and measure its look-alikes."""
        self.rec.use_gallery(gallery)
        self.version, self._stamp = version, self.store.stamp()
        self._alikes = of_recognizer(self.rec)

    def look_alikes(self, sku_id: str) -> list[dict[str, Any]]:
        """Products the pair check can hardly tell from `sku_id` (`vision_models.lookalike`), closest first."""
        return [a._asdict() for a in self._alikes.get(sku_id, [])]

    def remove(self, sku_id: str) -> int:
        check_sku(sku_id)
        with self.store.locked():
            gallery, _ = self.store.load()
            if not gallery.remove(sku_id):
                raise EnrollError("unknown_sku", f"{sku_id!r} has no prototype")
            shutil.rmtree(self.refs / sku_id, ignore_errors=True)
            self._use(gallery, self.store._save(gallery, self.rec.model_id))
        log.info("product_removed", sku=sku_id, version=self.version)
        return self.version

    def labels(self) -> list[str]:
        return [lb for lb in self.rec.labels if lb != EMPTY]

    def ref_names(self, sku_id: str) -> list[str]:
        d = self.refs / sku_id
        return (
            sorted(p.name for p in d.iterdir() if REF_RE.match(p.name))
            if SKU_RE.match(sku_id) and d.is_dir()
            else []
        )

    def ref_path(self, sku_id: str, name: str) -> Path | None:
        """The kept reference crop, or None (names are checked: no path ever comes from a request)."""
        if not SKU_RE.match(sku_id) or not REF_RE.match(name):
            return None
        p = self.refs / sku_id / name
        return p if p.is_file() else None

    def _ref_skus(self) -> list[str]:
        if not self.refs.is_dir():
            return []
        return sorted(
            d.name
            for d in self.refs.iterdir()
            if d.is_dir() and SKU_RE.match(d.name) and self.ref_names(d.name)
        )

    def _read_refs(self, sku_id: str) -> list[np.ndarray]:
        imgs = [cv2.imread(str(self.refs / sku_id / n), cv2.IMREAD_COLOR) for n in self.ref_names(sku_id)]
        return [im for im in imgs if im is not None]

    def _write_refs(self, sku_id: str, crops: Sequence[np.ndarray]) -> None:
        tmp = self.refs / f".{sku_id}.new"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, crop in enumerate(crops):
            if not cv2.imwrite(str(tmp / f"{i:02d}.png"), crop):
                raise OSError(f"cannot write {tmp}")
        dst = self.refs / sku_id
        old = self.refs / f".{sku_id}.old"
        shutil.rmtree(old, ignore_errors=True)
        if dst.exists():
            dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old, ignore_errors=True)


def lane_crops(
    frame: np.ndarray, rois: Sequence[CellRoi], slot_id: str
) -> tuple[list[CellRoi], list[np.ndarray]]:
    mine = [r for r in rois if r.slot_id == slot_id]
    return mine, [np.ascontiguousarray(square_crop(frame, r)) for r in mine]


class EnrollmentService:
    """The daemon side: enrollment from the page / cloud / shelf camera, and the missing-prototype check."""

    def __init__(
        self, db: LedgerDB, gallery: ProductGallery, capturer: Any, executor: Any, poll_s: float = 1.0
    ) -> None:
        self.db, self.gallery, self.capturer, self.executor = db, gallery, capturer, executor
        self.poll_s = poll_s
        self.missing: list[str] = []  # read by take-and-go at each capture: their lanes go weight-only
        self.lanes: dict[str, str] = {}  # {slot: sku} camera lanes whose SKU has no prototype
        self.unparted: list[dict[str, Any]] | None = None  # look-alikes neither camera nor scale can part
        self._lock = asyncio.Lock()
        self._seen_planogram: int | None = None

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def check(self) -> list[str]:
        """Compare the planogram's camera lanes with the gallery: one alarm listing the SKUs without a
        prototype and their lanes (re-raised when the list changes, cleared when none is left), and one
        for look-alikes sharing a shelf at one weight (`lookalike_shelves.sync_alarm`)."""
        return await self._check(await repo.current_planogram(self.db))

    async def _check(self, planogram: Planogram | None) -> list[str]:
        """`check` against `planogram`, the current one the caller has just read."""
        self._seen_planogram = planogram.version if planogram else None
        per_shelf = camera_skus(planogram)
        missing = missing_prototypes({s for skus in per_shelf.values() for s in skus}, self.gallery.rec.labels)
        blind = sorted((s.slot_id, s.sku_id, s.shelf) for s in planogram.slots.values()
                       if s.shelf is not None and s.sku_id in missing) if planogram else []
        lanes = {slot: sku for slot, sku, _ in blind}
        changed = (missing, lanes) != (self.missing, self.lanes)
        await repo.sync_list_alarm(
            self.db, ALARM_KEY, ALARM_KIND,
            f"{len(missing)} product(s) without a reference image, their lanes are read by weight "
            f"only: {', '.join(f'{sku} ({slot})' for slot, sku in lanes.items())}" if missing else None,
            data={"skus": missing, "lanes": lanes, "shelves": sorted({shelf for *_, shelf in blind})},
            was_raised=bool(self.missing), changed=changed,
            why_cleared="every camera lane's product has a prototype",
        )
        if changed and missing:
            log.warning("products_without_prototype", skus=missing, lanes=lanes)
        elif changed:
            log.info("products_without_prototype_cleared")
        self.missing, self.lanes = missing, lanes
        pairs = unparted(planogram, self.gallery.look_alikes)
        await sync_alarm(self.db, pairs, self.unparted)
        self.unparted = pairs
        return missing

    async def run(self) -> None:
        """Poll for a planogram change or a gallery written by another process; re-check on either."""
        while True:
            await asyncio.sleep(self.poll_s)
            changed = await self._blocking(self.gallery.reload_if_changed)
            planogram = await repo.current_planogram(self.db)
            if changed or (planogram.version if planogram else None) != self._seen_planogram:
                async with self._lock:
                    await self.check()

    async def _record(self, kind: str, data: Mapping[str, Any]) -> None:
        async with self.db.tx() as tx:
            await tx.event(kind, data)

    async def enroll(
        self, sku_id: str, images: Sequence[np.ndarray], *, actor: str, source: str
    ) -> dict[str, Any]:
        async with self._lock:
            version = await self._blocking(self.gallery.enroll, sku_id, list(images))
            planogram = await repo.current_planogram(self.db)
            alikes = on_shelves(planogram, sku_id, self.gallery.look_alikes(sku_id))
            await self._record(
                "product_enrolled",
                {
                    "sku_id": sku_id,
                    "images": len(images),
                    "source": source,
                    "actor": actor,
                    "gallery_version": version,
                    "look_alikes": alikes,
                },
            )
            await self._check(planogram)
        return {"sku_id": sku_id, "images": len(images), "gallery_version": version, "missing": self.missing,
                "look_alikes": alikes}

    async def enroll_encoded(
        self, sku_id: str, blobs: Sequence[bytes], *, actor: str, source: str
    ) -> dict[str, Any]:
        check_sku(sku_id)
        if not 1 <= len(blobs) <= MAX_IMAGES:
            raise EnrollError("bad_images", f"{len(blobs)} images (1..{MAX_IMAGES})")
        images = [decode_image(b) for b in blobs]
        return await self.enroll(sku_id, images, actor=actor, source=source)

    async def capture(self, sku_id: str, slot_id: str, *, actor: str) -> dict[str, Any]:
        """Reference crops of a filled lane from its shelf camera (cells read as bare shelf are skipped)."""
        check_sku(sku_id)
        planogram = await repo.current_planogram(self.db)
        slot = planogram.slots.get(slot_id) if planogram else None
        if slot is None or slot.shelf is None:
            raise EnrollError("bad_slot", f"{slot_id!r} is not a take-and-go lane")
        cam = self.capturer.cameras.get(slot.shelf)
        if cam is None:
            raise EnrollError("no_camera", f"shelf {slot.shelf} has no camera")
        frame = await cam.snapshot()
        rois, crops = lane_crops(frame.image, self.capturer.rois.get(slot.shelf, []), slot_id)
        if not rois:
            raise EnrollError("bad_slot", f"{slot_id!r} has no cells in shelf {slot.shelf}'s camera view")
        dets = await self._blocking(self.gallery.rec.recognize, frame.image, rois)
        keep = [c for c, d in zip(crops, dets, strict=True) if d.label != EMPTY]
        if not keep:
            raise EnrollError("lane_empty", f"lane {slot_id} looks empty: fill it and capture again")
        out = await self.enroll(sku_id, keep, actor=actor, source=f"camera:{slot_id}")
        return out | {"slot_id": slot_id, "cells": len(rois)}

    async def remove(self, sku_id: str, *, actor: str) -> dict[str, Any]:
        async with self._lock:
            version = await self._blocking(self.gallery.remove, sku_id)
            await self._record(
                "product_removed", {"sku_id": sku_id, "actor": actor, "gallery_version": version}
            )
            await self.check()
        return {"sku_id": sku_id, "gallery_version": version, "missing": self.missing}

    async def command(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """The signed cloud command `enroll_product`: {"sku_id": str, "images": [base64 PNG/JPEG, ...]}."""
        sku_id, images = args.get("sku_id"), args.get("images")
        check_sku(sku_id)  # type: ignore[arg-type]
        if (
            not isinstance(images, list)
            or not 1 <= len(images) <= MAX_IMAGES
            or not all(isinstance(b, str) for b in images)
        ):
            raise EnrollError("bad_images", f"images must be a list of 1..{MAX_IMAGES} base64 strings")
        if sum(len(b) for b in images) > MAX_COMMAND_B64:
            raise EnrollError("too_large", f"images over {MAX_COMMAND_B64} base64 characters in all")
        try:
            blobs = [base64.b64decode(b, validate=True) for b in images]
        except (binascii.Error, ValueError) as exc:
            raise EnrollError("bad_images", f"an image is not valid base64: {exc}") from exc
        out = await self.enroll_encoded(str(sku_id), blobs, actor="cloud", source="cloud")
        return {k: out[k] for k in ("sku_id", "images", "gallery_version", "missing", "look_alikes")}

    def products(self, planogram: Planogram | None) -> dict[str, Any]:
        """What the Products page shows."""
        lanes: dict[str, list[str]] = {}
        for slot in sorted(planogram.slots.values(), key=lambda s: s.slot_id) if planogram else ():
            if slot.shelf is not None:
                lanes.setdefault(slot.sku_id, []).append(slot.slot_id)
        per_shelf = camera_skus(planogram)
        rows = []
        for sku in self.gallery.labels():
            name = planogram.skus[sku].name if planogram and sku in planogram.skus else ""
            rows.append(
                {
                    "sku_id": sku,
                    "name": name,
                    "lanes": lanes.get(sku, []),
                    "refs": self.gallery.ref_names(sku),
                    "seed": not self.gallery.ref_names(sku),
                    "look_alikes": on_shelves(planogram, sku, self.gallery.look_alikes(sku), per_shelf),
                }
            )
        return {
            "rows": rows,
            "missing": [
                {
                    "sku_id": s,
                    "lanes": lanes.get(s, []),
                    "name": planogram.skus[s].name if planogram and s in planogram.skus else "",
                }
                for s in self.missing
            ],
            "version": self.gallery.version,
            "lanes": sorted(s for v in lanes.values() for s in v),
        }


def _has_scale(spread: Spread | None) -> bool:
    """A spread measured with its own scale (galleries written before 2.5.0 have none)."""
    return spread is not None and spread.scale > 0

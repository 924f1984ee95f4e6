"""Build the take-and-go service from config: cameras, ROIs, recognizer, evidence store.

Kept apart from the daemon so that onnxruntime and OpenCV are imported only on machines that sell
take-and-go (a spiral-only machine stays small).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
from typing import TYPE_CHECKING, Any

import structlog

from drivers.camera import Camera
from edge.clock import SystemClock
from edge.config import Config
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.enrollment import EnrollmentService, ProductGallery
from edge.services.evidence import Capturer, EvidenceStore, grid_rois
from edge.services.takeandgo import TakeAndGoService
from vision_models.recognizer import DEFAULT_MODEL_DIR, Recognizer
from vision_models.types import CellRoi, ModelError

if TYPE_CHECKING:
    from edge.services.plant import Plant

log = structlog.get_logger(__name__)
DEFAULT_MODEL = DEFAULT_MODEL_DIR  # the shipped model (vision_models/models/shelf-v2)


async def build_takeandgo(config: Config, db: LedgerDB, plant: Plant | None, clock: SystemClock) -> TakeAndGoService:
    """Cameras read on their own worker each (the camera driver's default), inference and enrollment on
    one pool, evidence writes on another: a slow disk never delays a decision, a stuck camera never
    holds the model. The model's load and warm-up inference run off the event loop."""
    tg = config.takeandgo
    executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="takeandgo.infer")
    evidence_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="takeandgo.evidence")
    problems: list[str] = []
    recognizer = gallery = None
    model_dir = tg.model_dir or DEFAULT_MODEL
    try:
        gallery = await asyncio.get_running_loop().run_in_executor(
            executor, _load_model, model_dir, tg.inference_threads, config.machine.data_dir)
        recognizer = gallery.rec
    except (ModelError, OSError) as exc:
        problems.append(f"model unavailable: {exc}")
    door = plant.door if plant is not None else None
    shelves = plant.shelves if plant is not None else None
    if door is None:
        problems.append("no door service (door.source)")
    if shelves is None:
        problems.append("no weight shelves (a Modbus device with role = \"weight_shelves\")")
    cameras, rois = await _cameras(config, db)
    evidence_dir = tg.evidence_dir or str(pathlib.Path(config.machine.data_dir) / "evidence")
    svc = TakeAndGoService(db, door or _NoDoor(), shelves, Capturer(cameras, rois, recognizer, executor),
                           EvidenceStore(evidence_dir, tg.evidence_keep, evidence_pool), tg,
                           open_too_long_s=config.door.open_too_long_s, clock=clock,
                           disabled_reason="; ".join(problems))
    svc.executor = executor
    svc.enrollment = None if gallery is None else EnrollmentService(db, gallery, svc.capturer, executor)
    if svc.enrollment is not None:
        await svc.enrollment.check()  # before the first session: one alarm, weight-only lanes
    if problems:
        async with db.tx() as tx:
            await repo.raise_alarm(tx, "takeandgo_disabled", "takeandgo_disabled",
                                   "take-and-go disabled: " + "; ".join(problems), severity="critical",
                                   data={"problems": problems})
        log.error("takeandgo_disabled", problems=problems)
    else:
        async with db.tx() as tx:
            await repo.clear_alarm(tx, "takeandgo_disabled", "model and devices available")
    return svc


def _load_model(model_dir: str | pathlib.Path, threads: int, data_dir: str) -> ProductGallery:
    """Blocking (run in an executor): load the model with its warm-up inference, open the gallery in use —
    the machine's (state directory); the shipped one is only its seed."""
    recognizer = Recognizer.load(model_dir, threads=threads)
    gallery = ProductGallery.for_model(data_dir, recognizer, model_dir)
    gallery.open()
    return gallery


async def _cameras(config: Config, db: LedgerDB) -> tuple[dict[int, Camera], dict[int, list[CellRoi]]]:
    planogram = await repo.current_planogram(db)
    cameras: dict[int, Camera] = {}
    rois: dict[int, list[CellRoi]] = {}
    for name, cc in config.cameras.items():
        source: int | str = int(cc.source) if cc.source.isdigit() else cc.source
        cameras[cc.shelf] = Camera(name, source, width=cc.width, height=cc.height, timeout_s=cc.timeout_s)
        slots = [s.slot_id for s in planogram.slots_on_shelf(cc.shelf)] if planogram else []
        rois[cc.shelf] = grid_rois(slots, cc.x0, cc.y0, cc.cell_w, cc.cell_h, cc.rows)
    return cameras, rois


class _NoDoor:
    """Stands in when no door is configured: the service is disabled and never unlocks."""

    refusing = True

    def on_opened(self, cb: Any) -> None: ...

    def on_closed(self, cb: Any) -> None: ...

"""Capturing what the cameras and scales saw, and keeping it (bounded) for human review."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import pathlib
import re
import shutil
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import structlog

from drivers.errors import DeviceError
from edge.core.fusion import CellObs
from vision_models.change import changed_cells
from vision_models.types import EMPTY, CellDetection, CellRoi, settled

log = structlog.get_logger(__name__)


@dataclass
class ShelfView:
    """One camera's cells for one moment: None when the camera (or the model) failed."""

    shelf: int
    cells: list[CellObs] | None
    error: str | None = None


def grid_rois(slots: list[str], x0: int, y0: int, cell_w: int, cell_h: int, rows: int) -> list[CellRoi]:
    """Cells of a top-down shelf camera: lanes left→right, position 0 at the front (image bottom)."""
    return [CellRoi(slot, pos, x0 + i * cell_w, y0 + (rows - 1 - pos) * cell_h, cell_w, cell_h)
            for i, slot in enumerate(slots) for pos in range(rows)]


class Capturer:
    """Snapshots every shelf camera at once and runs the recognizer off the loop."""

    def __init__(self, cameras: dict[int, Any], rois: dict[int, list[CellRoi]], recognizer: Any,
                 executor: concurrent.futures.Executor) -> None:
        self.cameras = cameras
        self.rois = rois
        self.recognizer = recognizer
        self.executor = executor
        self.cells = Counter[str]()  # cells "read" by the recognizer and "reused" from an earlier frame, since start

    async def capture(self, shelves: list[int], candidates: Collection[str] | None = None,
                      earlier: Mapping[int, tuple[Any, ShelfView]] | None = None
                      ) -> tuple[dict[int, ShelfView], dict[int, Any]]:
        """({shelf: cells}, {shelf: image}) for every shelf; a failed camera gives cells None.
        `candidates`: the products a cell may be named (the fridge's stock), None: any in the gallery.
        `earlier`: {shelf: (image, view)} of a capture with the same candidates (the session's before):
        its cells that look the same now (`vision_models.change`) are taken over, not read again."""
        results = await asyncio.gather(*(self._one(s, candidates, (earlier or {}).get(s)) for s in shelves))
        return {s: v for s, (v, _) in zip(shelves, results, strict=True)}, \
               {s: img for s, (_, img) in zip(shelves, results, strict=True) if img is not None}

    async def _one(self, shelf: int, candidates: Collection[str] | None,
                   earlier: tuple[Any, ShelfView] | None) -> tuple[ShelfView, Any]:
        cam = self.cameras.get(shelf)
        if cam is None or self.recognizer is None:
            return ShelfView(shelf, None, "no camera" if cam is None else "no model"), None
        try:
            frame = await cam.snapshot()
        except DeviceError as exc:
            log.warning("camera_failed", shelf=shelf, error=str(exc))
            return ShelfView(shelf, None, str(exc)), None
        loop = asyncio.get_running_loop()
        cells, reused = await loop.run_in_executor(self.executor, self._read, frame.image, self.rois[shelf],
                                                   candidates, earlier)
        self.cells.update(read=len(cells) - reused, reused=reused)
        return ShelfView(shelf, cells), frame.image

    def _read(self, image: Any, rois: list[CellRoi], candidates: Collection[str] | None,
              earlier: tuple[Any, ShelfView] | None) -> tuple[list[CellObs], int]:
        """(the cells of `image`, how many were taken over from `earlier`); blocking: in the executor.
        Only the cells that changed since `earlier` are recognized, when its cells are these ROIs'."""
        gates = doubt_gates(self.recognizer)
        old = earlier[1].cells if earlier is not None else None
        if earlier is None or old is None or [(c.slot_id, c.position) for c in old] != [(r.slot_id, r.position)
                                                                                       for r in rois]:
            return cell_observations(self.recognizer.recognize(image, rois, candidates), *gates), 0
        changed = np.flatnonzero(changed_cells(earlier[0], image, rois))
        cells = list(old)
        if changed.size:
            fresh = self.recognizer.recognize(image, [rois[i] for i in changed], candidates)
            for i, obs in zip(changed, cell_observations(fresh, *gates), strict=True):
                cells[i] = obs
        return cells, len(rois) - int(changed.size)


def doubt_gates(recognizer: Any) -> tuple[float, float]:
    """The model card's calibrated best-vs-second margin (`doubt.min_margin`; 0 = none) and the pair
    check's |z| that settles a read below it (`doubt.min_pair_z`; none: nothing settles it)."""
    return float(recognizer.min_margin), float(recognizer.min_pair_z)  # as `Recognizer` read them from its card


def cell_observations(dets: Sequence[CellDetection], min_margin: float = 0.0,
                      min_pair_z: float = float("inf")) -> list[CellObs]:
    """The recognizer's detections as fusion's cell observations (`quality`: the similarity judged
    against the label's own references, see `CellDetection.quality`). A product read whose
    runner-up is within `min_margin` (its `lead`: look-alikes, never-seen products), unless the pair
    check settled it (`pair_z` >= `min_pair_z`), is passed on as not `settled`: its view may be
    clean, its name is unsure between the two; the other frame and the scale decide it."""
    return [CellObs(d.slot_id, d.position, d.label, float(d.score), d.runner_up, float(d.runner_up_score),
                    float(d.quality), d.label == EMPTY or settled(d, min_margin, min_pair_z)) for d in dets]


def cells_to_json(view: ShelfView) -> dict[str, Any]:
    return {"shelf": view.shelf, "error": view.error,
            "cells": None if view.cells is None else [asdict(c) for c in view.cells]}


def cells_from_json(doc: dict[str, Any]) -> ShelfView:
    cells = doc.get("cells")
    return ShelfView(int(doc["shelf"]), None if cells is None else [CellObs(**c) for c in cells], doc.get("error"))


SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMAGE_RE = re.compile(r"^(before|after)_shelf[0-9]{1,2}\.jpg$")


class EvidenceStore:
    """JPEGs and a JSON summary per session under `root/<session_id>/`; only the newest `keep` stay."""

    def __init__(self, root: str, keep: int, executor: concurrent.futures.Executor) -> None:
        self.root = pathlib.Path(root)
        self.keep = keep
        self.executor = executor

    async def save_images(self, session_id: str, tag: str, images: dict[int, Any]) -> list[str]:
        if not images or self.keep == 0:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._write, session_id, tag, images)

    def _write(self, session_id: str, tag: str, images: dict[int, Any]) -> list[str]:
        d = self.root / session_id
        d.mkdir(parents=True, exist_ok=True)
        out = []
        for shelf, img in images.items():
            p = d / f"{tag}_shelf{shelf}.jpg"
            cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
            out.append(str(p))
        return out

    def files(self, session_id: str) -> list[str]:
        """The session's evidence images (names only), before first."""
        d = self.root / session_id
        if not SESSION_RE.match(session_id) or not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if IMAGE_RE.match(p.name)), key=lambda n: (n[0] != "b", n))

    def path(self, session_id: str, name: str) -> pathlib.Path | None:
        """A stored image, or None: names are matched against fixed patterns, never joined blindly."""
        if not SESSION_RE.match(session_id) or not IMAGE_RE.match(name):
            return None
        p = self.root / session_id / name
        return p if p.is_file() else None

    async def save_summary(self, session_id: str, summary: dict[str, Any]) -> None:
        if self.keep == 0:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._summary, session_id, summary)

    def _summary(self, session_id: str, summary: dict[str, Any]) -> None:
        d = self.root / session_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps(summary, default=str, indent=1))
        sessions = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in sessions[:-self.keep] if len(sessions) > self.keep else []:
            shutil.rmtree(old, ignore_errors=True)

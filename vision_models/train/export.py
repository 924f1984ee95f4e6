"""Export the trained embedder to ONNX, build the gallery, evaluate, write the model card.

Everything after the ONNX export goes through the runtime `Recognizer` (onnxruntime), so the
figures in the card are what the daemon will get, not what torch got. The gallery references,
calibration and held-out cells and the latency frames come from the data directory
(`vision_models.train.dataset.DataDir`), written by `python -m hw_sim.camera.dataset`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from vision_models.enroll import Gallery, prototype
from vision_models.recognizer import CARD_FILE, FEATURES_OUTPUT, GALLERY_FILE, MODEL_FILE, Recognizer
from vision_models.train.dataset import Cells, DataDir
from vision_models.train.evaluate import evaluate
from vision_models.types import EMPTY, CellRoi

log = structlog.get_logger(__name__)

FEATURES_OUTPUT_PAIR = ("embedding", FEATURES_OUTPUT)


def export_onnx(model: torch.nn.Module, path: Path, input_size: int) -> None:
    """TorchScript-based export (dynamo=False), dynamic batch, opset 17. A model returning a pair
    gives the outputs `embedding` and `features` (the pair check's, `backbones.WithFeatures`)."""
    dummy = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        outputs = (FEATURES_OUTPUT_PAIR if isinstance(model(dummy), tuple) else ("embedding",))
    torch.onnx.export(model, (dummy,), str(path), input_names=["crops"], output_names=list(outputs),
                      dynamic_axes={"crops": {0: "n"}, **{o: {0: "n"} for o in outputs}}, opset_version=17,
                      dynamo=False)


def build_gallery(rec: Recognizer, labels: list[str], refs: dict[str, list[np.ndarray]]) -> Gallery:
    """One prototype per label from its reference renders, embedded by the runtime model."""
    protos = [prototype(rec.embed(refs[lb])) for lb in labels]
    return Gallery(labels, np.stack(protos))


def calibrate_scale(rec: Recognizer, gallery: Gallery, cells: Cells) -> float:
    """The softmax scale that minimizes log-loss on calibration frames, so a score of 0.9 means
    right about 9 times in 10 (fusion relies on scores and runner-ups for doubtful cells)."""
    labels, protos = gallery.snapshot()
    sims, truth = [], []
    for frame in cells.frames():
        sims.append(rec.embed(list(cells.x[frame])) @ protos.T)
        truth += [labels.index(n) for n in cells.labels[frame]]
    cos, idx = np.concatenate(sims), np.array(truth)
    best, best_nll = 16.0, np.inf
    for scale in np.geomspace(4.0, 128.0, 41):
        z = cos * scale
        z -= z.max(axis=1, keepdims=True)
        nll = float(-(z[np.arange(len(idx)), idx] - np.log(np.exp(z).sum(axis=1))).mean())
        if nll < best_nll:
            best, best_nll = float(scale), nll
    log.info("scale_calibrated", scale=round(best, 2), nll=round(best_nll, 5), cells=len(idx))
    return round(best, 3)


def measure_latency(rec: Recognizer, frames: list[tuple[np.ndarray, list[CellRoi]]],
                    reps: int = 40) -> dict[str, Any]:
    """recognize() wall time: one shelf (30 cells) and four shelves (4 x 30 cells) at 640x480."""
    per_batch, per_four = [], []
    for _ in range(reps):
        t_four = time.perf_counter()
        for frame, rois in frames:
            t = time.perf_counter()
            rec.recognize(frame, rois)
            per_batch.append((time.perf_counter() - t) * 1000)
        per_four.append((time.perf_counter() - t_four) * 1000)

    def q(v: list[float], p: float) -> float:
        return round(float(np.percentile(v, p)), 2)

    height, width = frames[0][0].shape[:2]
    return {"frame": f"{width}x{height}", "cells_per_batch": len(frames[0][1]), "threads": 1,
            "batch_ms_p50": q(per_batch, 50), "batch_ms_p95": q(per_batch, 95),
            "four_shelves_ms_p50": q(per_four, 50), "four_shelves_ms_p95": q(per_four, 95),
            "includes": "crop + resize + normalize + onnx run + similarity"}


def _write_card(path: Path, card: dict[str, Any]) -> None:
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


METHOD = ("3-conv CNN -> L2-normalized embedding; cosine similarity to per-label gallery "
          "prototypes; score = softmax(similarity_scale * cosine)")


def _base_card(out: Path, labels: list[str], gallery_meta: dict[str, Any], *, input_size: int, embed_dim: int,
               sim_scale: float, mean: np.ndarray, std: np.ndarray,
               train_info: dict[str, Any], method: str = METHOD, version: str = "1.0.0") -> dict[str, Any]:
    """Card fields known before evaluation (the sha256 pins the exported model.onnx)."""
    return {
        "name": out.name, "version": version,
        "task": "top-down shelf cell -> product sku or empty (fixed camera per shelf)",
        "method": method,
        "input": {"size": input_size, "channels": 3, "order": "BGR", "layout": "NCHW", "dtype": "float32",
                  "crop": "centred square of the cell ROI (side = short side), INTER_AREA resize"},
        "normalization": {"scale": 1 / 255, "mean": [round(float(v), 5) for v in mean],
                          "std": [round(float(v), 5) for v in std]},
        "embedding_dim": embed_dim, "similarity_scale": sim_scale, "labels": labels,
        "onnx": {"file": MODEL_FILE, "opset": 17, "input": "crops", "output": "embedding",
                 "sha256": hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest()},
        "gallery": {"file": GALLERY_FILE, "refs_per_label": gallery_meta["refs_per_label"],
                    "ref_seed": gallery_meta["ref_seed"],
                    "refs": "full-lane renders, lighting 0.85-1.15, noise 3, no occlusion"},
        "training_data": train_info,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def finish_model_dir(model: torch.nn.Module, out: Path, data: DataDir, *, input_size: int, embed_dim: int,
                     sim_scale: float, mean: np.ndarray, std: np.ndarray,
                     train_info: dict[str, Any], onnx_file: Path | None = None,
                     method: str = METHOD, version: str = "1.0.0") -> dict[str, Any]:
    """Write model.onnx, gallery.npz and model_card.json into `out`; returns the card.

    `onnx_file` (an already exported, e.g. quantized, model) is copied instead of exporting `model`."""
    out.mkdir(parents=True, exist_ok=True)
    if onnx_file is None:
        export_onnx(model, out / MODEL_FILE, input_size)
    else:
        (out / MODEL_FILE).write_bytes(onnx_file.read_bytes())
    labels = [*data.demo_skus, EMPTY]
    card = _base_card(out, labels, data.meta["gallery"], input_size=input_size, embed_dim=embed_dim,
                      sim_scale=sim_scale, mean=mean, std=std, train_info=train_info, method=method,
                      version=version)
    _write_card(out / CARD_FILE, card)
    rec, card["similarity_scale"] = seed_gallery(out, labels, data, embed_dim)
    if rec.pair_dim != embed_dim:
        card["onnx"]["pair_features"] = {"output": FEATURES_OUTPUT, "dim": rec.pair_dim}
    card["calibration"] = {"seeds": data.meta["calibration"]["seeds"], "method": "grid search of the "
                           "softmax scale minimizing log-loss", "train_scale": sim_scale}
    return finish_card(out, card, data)


def seed_gallery(out: Path, labels: list[str], data: DataDir, dim: int) -> tuple[Recognizer, float]:
    """The simulator catalogue's gallery (`build_gallery`) made with the model and card in `out`
    (loaded with a placeholder gallery of `dim`) and saved there; returns that recognizer and the
    softmax scale calibrated on the gallery (`calibrate_scale`)."""
    rec = Recognizer.load(out, threads=1, gallery=Gallery([EMPTY], np.ones((1, dim), np.float32)))
    gallery = build_gallery(rec, labels, data.gallery_refs())
    gallery.save(out / GALLERY_FILE)
    return rec, calibrate_scale(rec, gallery, data.calibration())


def finish_card(out: Path, card: dict[str, Any], data: DataDir) -> dict[str, Any]:
    """Write `card` into `out`, then evaluate the model directory as the runtime reads it (held-out
    cells, look-alikes, latency, file sizes) and write the card again with those figures."""
    _write_card(out / CARD_FILE, card)
    rec = Recognizer.load(out, threads=1)
    card["evaluation"] = evaluate(rec, data.heldout(), data.meta["heldout"]["seeds"], data.lookalike_pairs)
    card["latency"] = measure_latency(rec, data.latency_frames())
    card["files_bytes"] = {f: (out / f).stat().st_size for f in (MODEL_FILE, GALLERY_FILE)}
    _write_card(out / CARD_FILE, card)
    log.info("model_card_written", accuracy=card["evaluation"]["cell_accuracy"],
             lookalike=card["evaluation"]["lookalike_accuracy"], latency=card["latency"])
    return card

"""Shelf-camera product recognition: cell crops -> SKU labels with scores (onnxruntime, CPU).

    rec = Recognizer.load("vision_models/models/shelf-v1", threads=1)
    dets = rec.recognize(frame, [CellRoi(...), ...])   # blocking: run in an executor

Training (torch, optional extra) lives in `vision_models.train` and is never imported here.
"""

from vision_models.recognizer import DEFAULT_MODEL_DIR, Recognizer
from vision_models.types import EMPTY, CellDetection, CellRoi, ModelError, is_doubtful, settled

__all__ = ["DEFAULT_MODEL_DIR", "EMPTY", "CellDetection", "CellRoi", "ModelError", "Recognizer", "is_doubtful", "settled"]

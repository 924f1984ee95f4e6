"""int8 post-training quantization of an exported embedder (onnxruntime `quantize_static`, QDQ,
per-channel weights). `quantize_dynamic` is about 10x slower on this class of CPU, so it is not
offered. Calibration uses simulator calibration cells and randomized designs, never the novel bench.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from vision_models.preprocess import to_tensor


class _Reader(CalibrationDataReader):
    def __init__(self, crops: np.ndarray, normalization: dict[str, Any], batch: int = 32) -> None:
        self._batches = [to_tensor(crops[i : i + batch], normalization) for i in range(0, len(crops), batch)]
        self._it = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {"crops": x}

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_int8(src: Path, dst: Path, crops: np.ndarray, normalization: dict[str, Any]) -> None:
    """Write an int8 QDQ copy of the fp32 model `src` to `dst`, calibrated on `crops` (uint8 NHWC)."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            _Reader(crops, normalization),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )

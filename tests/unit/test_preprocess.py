"""The model's input tensor: what the card's normalization says, laid out as onnxruntime reads it."""

from __future__ import annotations

import numpy as np

from vision_models.preprocess import to_tensor


def test_to_tensor_is_the_cards_normalization_in_contiguous_nchw() -> None:
    crops = np.random.default_rng(3).integers(0, 256, (5, 7, 9, 3), np.uint8)
    norm = {"scale": 1 / 255, "mean": [0.406, 0.456, 0.485], "std": [0.225, 0.224, 0.229]}  # BGR order
    x = to_tensor(crops, norm)
    assert x.shape == (5, 3, 7, 9) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    want = (crops.astype(np.float64) / 255 - np.array(norm["mean"])) / np.array(norm["std"])
    assert np.allclose(x, want.transpose(0, 3, 1, 2), atol=1e-5)
    half = to_tensor(crops[:1], {"mean": [0.5] * 3, "std": [0.5] * 3})  # scale defaults to 1/255
    assert half.min() >= -1.0 and half.max() <= 1.0 and np.isclose(half[0, 2, 0, 0], crops[0, 0, 0, 2] / 127.5 - 1)

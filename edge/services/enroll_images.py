"""Reference images for product enrollment: SKU ids and PNG/JPEG uploads checked before anything
is decoded (bytes, header dimensions), so a hostile upload never reaches the image decoder.

Split out of `edge.services.enrollment` (which re-exports these names).
"""

from __future__ import annotations

import re
import struct

import cv2
import numpy as np

from vision_models.types import EMPTY

SKU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_IMAGES = 12  # reference images per enrollment
MAX_IMAGE_BYTES = 2 * 1024 * 1024  # one encoded image
MAX_SIDE = 4096  # decoded width or height


class EnrollError(ValueError):
    """Refused: bad SKU id, image or slot. `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def check_sku(sku_id: str) -> str:
    if not isinstance(sku_id, str) or not SKU_RE.match(sku_id) or sku_id == EMPTY:
        raise EnrollError("bad_sku", f"SKU id {str(sku_id)[:70]!r}: 1-64 of A-Z a-z 0-9 _ . - (not 'empty')")
    return sku_id


def image_dims(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None when neither."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seg,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + seg
    return None


def decode_image(data: bytes) -> np.ndarray:
    """A PNG/JPEG (bounded in bytes and pixels, checked before decoding) as a BGR uint8 image."""
    if not data:
        raise EnrollError("bad_image", "empty image")
    if len(data) > MAX_IMAGE_BYTES:
        raise EnrollError("image_too_large", f"image of {len(data)} bytes (at most {MAX_IMAGE_BYTES})")
    dims = image_dims(data)
    if dims is None:
        raise EnrollError("bad_image", "not a PNG or JPEG image")
    if not (8 <= dims[0] <= MAX_SIDE and 8 <= dims[1] <= MAX_SIDE):
        raise EnrollError("bad_image", f"image of {dims[0]}x{dims[1]} px (8..{MAX_SIDE} per side)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise EnrollError("bad_image", "the image cannot be decoded")
    return img

"""A customer's phone held up to the scanner camera: shows a QR code (an offline token) or nothing.

Use it as a `CameraServer` renderer: `CameraServer({"scanner": phone})` serves what the scanner
camera sees at `/cam/scanner.jpg`. `show(token)` puts a QR code of the string on the screen (segno,
with the standard 4-module quiet zone, scaled up with whole pixels per module), `clear()` blanks
it. `render(lighting=1.0, noise=0.0)` → a BGR frame. Never imports edge or sync.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import segno

BACKGROUND = 45  # the scene around the phone
SCREEN = 235  # a lit phone screen without a code


class PhoneScreen:
    """What the scanner sees: a phone screen in front of a dark background."""

    def __init__(self, width: int = 640, height: int = 480, *, error: str = "m", seed: int = 0) -> None:
        self.width, self.height, self.error = width, height, error
        self._rng = np.random.default_rng(seed)
        self._token: str | None = None
        self._frame: np.ndarray | None = None
        self._lock = threading.Lock()  # renders run in the camera server's worker threads
        self.shown = 0

    @property
    def token(self) -> str | None:
        return self._token

    def show(self, token: str) -> None:
        """Put a QR code of `token` on the screen (raises segno's DataOverflowError if it cannot fit)."""
        frame = self._compose(qr_image(token, error=self.error))
        with self._lock:
            self._token, self._frame = token, frame
            self.shown += 1

    def clear(self) -> None:
        """The customer takes the phone away: nothing to read."""
        with self._lock:
            self._token, self._frame = None, None

    def render(self, lighting: float = 1.0, noise: float = 0.0) -> np.ndarray:
        """The current camera frame (BGR uint8), optionally darker/brighter and noisy."""
        with self._lock:
            frame = self._frame if self._frame is not None else self._compose(None)
        out = frame.astype(np.float32) * lighting
        if noise > 0:
            out += self._rng.normal(0.0, noise, out.shape)
        frame_out: np.ndarray = np.clip(out, 0, 255).astype(np.uint8)
        return frame_out

    def _compose(self, code: np.ndarray | None) -> np.ndarray:
        h, w = self.height, self.width
        frame = np.full((h, w), BACKGROUND, np.uint8)
        side = int(min(h, w) * 0.92)
        y0, x0 = (h - side) // 2, (w - side) // 2
        frame[y0:y0 + side, x0:x0 + side] = SCREEN
        if code is not None:
            scale = max(1, side // code.shape[0])
            big = cv2.resize(code, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            qy, qx = (h - big.shape[0]) // 2, (w - big.shape[1]) // 2
            frame[qy:qy + big.shape[0], qx:qx + big.shape[1]] = big
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def qr_image(text: str, *, error: str = "m", border: int = 4) -> np.ndarray:
    """A QR code of `text` as a grayscale image, one pixel per module, quiet zone included."""
    qr = segno.make(text, error=error, micro=False)
    rows = np.array([list(r) for r in qr.matrix_iter(scale=1, border=border)], dtype=bool)
    return np.where(rows, 0, 255).astype(np.uint8)

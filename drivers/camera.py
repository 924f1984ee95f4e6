"""Shelf cameras: one fresh frame on demand, from a device, a file, a stream URL or a JPEG endpoint.

`Camera(name, source)` accepts
  * an int — a local device index (V4L2 via cv2.VideoCapture);
  * a file path — a still image (read every time) or a video (looped);
  * an rtsp:// or http(s):// stream URL (MJPEG, ...) — cv2.VideoCapture through FFmpeg, kept open;
  * an http(s) URL whose path ends in .jpg/.jpeg — a snapshot endpoint, fetched with urllib.

Every blocking cv2/urllib call runs in a bounded executor (one worker per camera by default) and
every snapshot has a deadline, so a hung camera costs `timeout_s`, never the event loop. A stream
buffers frames while nobody reads it, so a snapshot grabs until a grab has to *wait* for the camera
(the buffer is drained) and returns that frame. Errors are typed: DeviceTimeout (no frame in time),
DeviceDisconnected (cannot open / connection refused / HTTP 5xx / stream ended), DeviceFault
(an all-black frame: lens covered or light dead), ProtocolError (bytes that are not an image).
Imports stdlib, numpy and cv2 only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import structlog

from drivers.errors import DeviceDisconnected, DeviceError, DeviceFault, DeviceTimeout, ProtocolError

log = structlog.get_logger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Frame:
    """One picture: BGR uint8 `image`, `captured_at` on time.monotonic(), `source` = camera name."""

    image: np.ndarray
    captured_at: float
    source: str


def _is_snapshot_url(source: str) -> bool:
    parts = urllib.parse.urlsplit(source)
    return parts.scheme in ("http", "https") and parts.path.lower().endswith((".jpg", ".jpeg"))


class _JpegEndpoint:
    """A snapshot URL: one HTTP GET per frame."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.dropped = 0

    def read(self) -> tuple[np.ndarray, float]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:  # noqa: S310 (config URL)
                data = resp.read()
        except urllib.error.HTTPError as exc:
            err = DeviceDisconnected if exc.code >= 500 else DeviceFault
            raise err(f"HTTP {exc.code} from snapshot endpoint") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise DeviceTimeout(f"no snapshot within {self.timeout_s}s") from exc
            raise DeviceDisconnected(f"snapshot endpoint unreachable: {exc.reason}") from exc
        except TimeoutError as exc:
            raise DeviceTimeout(f"no snapshot within {self.timeout_s}s") from exc
        except OSError as exc:
            raise DeviceDisconnected(f"snapshot connection failed: {exc}") from exc
        t = time.monotonic()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ProtocolError(f"snapshot is not an image ({len(data)} bytes)")
        return image, t

    def release(self) -> None:
        return None


class _StillFile:
    """A still image on disk (tests, demos): read on every snapshot so it may be replaced."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dropped = 0

    def read(self) -> tuple[np.ndarray, float]:
        image = cv2.imread(self.path, cv2.IMREAD_COLOR)
        if image is None:
            raise DeviceDisconnected(f"cannot read image file {self.path}")
        return image, time.monotonic()

    def release(self) -> None:
        return None


class _Capture:
    """cv2.VideoCapture kept open: a device, a video file (looped) or a stream URL."""

    def __init__(self, source: int | str, width: int, height: int, timeout_s: float, max_grabs: int,
                 fresh_grab_s: float) -> None:
        self.source, self.width, self.height = source, width, height
        self.timeout_ms = int(timeout_s * 1000)
        self.max_grabs, self.fresh_grab_s = max_grabs, fresh_grab_s
        self.live = isinstance(source, int) or "://" in source
        self.cap: Any = None
        self.opens = 0
        self.dropped = 0
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float] | None = None
        self._taken = False
        self._error: DeviceError | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _open(self) -> Any:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms]
        api = cv2.CAP_FFMPEG if isinstance(self.source, str) and "://" in self.source else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.source, api, params)
        if not cap.isOpened():
            cap.release()
            raise DeviceDisconnected("cannot open capture source")
        if isinstance(self.source, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self.opens += 1
        return cap

    def read(self) -> tuple[np.ndarray, float]:
        if not self.live:
            if self.cap is None:
                self.cap = self._open()
            return self._read_file()
        return self._read_live()

    def _read_live(self) -> tuple[np.ndarray, float]:
        """A frame decoded after this call began, from the reader thread that drains the stream.

        A live source buffers frames (the MJPEG socket, the V4L2 queue); guessing freshness from
        grab timings fails under load. One thread per stream reads continuously, so the newest
        decoded frame is never older than one frame interval, and we wait for one newer than `asked`.
        """
        asked = time.monotonic()
        with self._cond:
            # a reader that gave up may still be releasing its capture (slow under load): its error
            # answered an earlier call, so this call starts a new reader instead of raising it again
            if self._thread is None or not self._thread.is_alive() or self._error is not None:
                self._error = None
                self._thread = threading.Thread(target=self._pump, name=f"camera-reader-{self.source}",
                                                daemon=True)
                self._thread.start()
            ok = self._cond.wait_for(lambda: self._error is not None or (self._latest is not None
                                                                          and self._latest[1] > asked),
                                     timeout=self.timeout_ms / 1000)
            if self._error is not None:
                raise self._error
            if not ok or self._latest is None:
                raise DeviceTimeout("no frame from stream before the read timeout")
            self._taken = True
            return self._latest

    def _pump(self) -> None:
        try:
            cap = self._open()
        except DeviceError as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            return
        try:
            while not self._stop.is_set():
                ok, image = cap.read()
                with self._cond:
                    if not ok or image is None:
                        self._error = DeviceDisconnected("stream ended or timed out")
                        self._cond.notify_all()
                        return
                    if self._latest is not None and not self._taken:
                        self.dropped += 1  # decoded but nobody asked for it: the stream stays drained
                    self._latest, self._taken = (image, time.monotonic()), False
                    self._cond.notify_all()
        finally:
            cap.release()

    def _read_file(self) -> tuple[np.ndarray, float]:
        ok, image = self.cap.read()
        if not ok:  # end of a video file: loop
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self.cap.read()
        if not ok or image is None:
            raise DeviceDisconnected("video file has no readable frame")
        return image, time.monotonic()

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_ms / 1000 + 1)
            self._thread = None
        self._stop = threading.Event()
        self._latest = None


async def _settle(fut: concurrent.futures.Future[Any] | None) -> None:
    """Wait for a worker call to finish without raising its outcome (its caller already gave up)."""
    if fut is None or fut.done():
        return
    wrapped = asyncio.wrap_future(fut)
    wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
    await asyncio.wait([wrapped])


class Camera:
    """One camera. `await snapshot()` -> a fresh Frame or a DeviceError within `timeout_s`."""

    def __init__(self, name: str, source: int | str, *, width: int = 640, height: int = 480,
                 timeout_s: float = 1.0, max_age_s: float = 0.5,
                 executor: concurrent.futures.Executor | None = None, black_level: float | None = 6.0,
                 max_grabs: int = 30, fresh_grab_s: float = 0.04) -> None:
        self.name = name
        self.timeout_s, self.max_age_s, self.black_level = timeout_s, max_age_s, black_level
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"camera-{name}")
        self._backend: _JpegEndpoint | _StillFile | _Capture
        if isinstance(source, str) and _is_snapshot_url(source):
            self._backend = _JpegEndpoint(source, timeout_s)
        elif isinstance(source, str) and "://" not in source and source.lower().endswith(IMAGE_EXTS):
            self._backend = _StillFile(source)
        elif isinstance(source, str) and "://" not in source and not os.path.exists(source):
            raise DeviceDisconnected(f"camera {name}: no such file {source}")
        else:
            self._backend = _Capture(source, width, height, timeout_s, max_grabs, fresh_grab_s)
        self._inflight: concurrent.futures.Future[tuple[np.ndarray, float]] | None = None
        self._closed = False
        self.healthy = False
        self.last_error: str | None = None
        self.counters: dict[str, int] = {k: 0 for k in (
            "snapshots", "errors", "timeouts", "disconnects", "stale_frames", "black_frames",
            "dropped_frames", "reopens")}
        self._log = log.bind(camera=name)

    async def snapshot(self) -> Frame:
        """A frame no older than `max_age_s`; DeviceTimeout / DeviceDisconnected / DeviceFault /
        ProtocolError otherwise. Never waits longer than `timeout_s`."""
        if self._closed:
            raise DeviceDisconnected(f"camera {self.name} is closed")
        try:
            async with asyncio.timeout(self.timeout_s):
                frame = await self._fresh_frame()
        except TimeoutError:
            err = DeviceTimeout(f"camera {self.name}: no fresh frame within {self.timeout_s}s")
            self._failed(err, "timeouts")
            raise err from None
        except DeviceError as exc:
            kind = "timeouts" if isinstance(exc, DeviceTimeout) else (
                "disconnects" if isinstance(exc, DeviceDisconnected) else "errors")
            self._failed(exc, kind)
            raise
        self._recovered()
        return frame

    async def _fresh_frame(self) -> Frame:
        while True:
            image, captured_at = await self._run_read()
            if time.monotonic() - captured_at > self.max_age_s:
                self.counters["stale_frames"] += 1
                continue
            if self.black_level is not None and float(image.mean()) < self.black_level:
                self.counters["black_frames"] += 1
                raise DeviceFault(f"camera {self.name}: black frame (mean < {self.black_level})")
            self.counters["snapshots"] += 1
            self.counters["dropped_frames"] = self._backend.dropped
            if isinstance(self._backend, _Capture):
                self.counters["reopens"] = max(0, self._backend.opens - 1)
            return Frame(image, captured_at, self.name)

    async def _run_read(self) -> tuple[np.ndarray, float]:
        """One blocking read in the executor. A read left running by an earlier timeout is waited
        for (within this call's deadline) instead of queueing a second one behind it."""
        await _settle(self._inflight)
        fut = self._executor.submit(self._backend.read)
        self._inflight = fut
        return await asyncio.wrap_future(fut)

    def _failed(self, exc: DeviceError, counter: str) -> None:
        self.counters[counter] += 1
        if self.healthy or self.last_error is None:
            self._log.warning("camera_failed", error=str(exc), kind=type(exc).__name__)
        else:
            self._log.debug("camera_still_failing", error=str(exc))
        self.healthy = False
        self.last_error = f"{type(exc).__name__}: {exc}"

    def _recovered(self) -> None:
        if not self.healthy and self.last_error is not None:
            self._log.info("camera_recovered", previous_error=self.last_error)
        self.healthy = True
        self.last_error = None

    async def close(self) -> None:
        """Release the capture (in its worker, after any read still running) and the own executor."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        idle = False
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                await _settle(self._inflight)
                await loop.run_in_executor(self._executor, self._backend.release)
                idle = True
        except TimeoutError:
            self._log.warning("camera_close_timeout")
        finally:
            if self._own_executor:
                # joining an idle worker takes microseconds; a stuck one is left to its read timeout
                self._executor.shutdown(wait=idle, cancel_futures=True)

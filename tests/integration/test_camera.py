"""Camera driver against the simulated IP cameras over real HTTP (snapshot + MJPEG through FFmpeg)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.camera import Camera
from drivers.errors import DeviceDisconnected, DeviceError, DeviceFault, DeviceTimeout
from hw_sim.camera.render import ShelfRenderer
from hw_sim.camera.server import CameraServer
from hw_sim.world import FridgeWorld, load_demo_planogram

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def world() -> FridgeWorld:
    return FridgeWorld(load_demo_planogram())


@pytest.fixture
async def server(world: FridgeWorld) -> AsyncIterator[CameraServer]:
    srv = CameraServer({f"shelf{i}": ShelfRenderer(world, i, seed=i) for i in range(2)}, fps=10)
    await srv.start()
    yield srv
    await srv.stop()


def lane_roi(world: FridgeWorld, slot: str, image: np.ndarray) -> np.ndarray:
    """The pixels of a whole lane (all its cells) in a frame."""
    cells = [c for c in ShelfRenderer(world, world.lanes[slot].shelf).layout() if c["slot_id"] == slot]
    x0, y0 = min(c["x"] for c in cells), min(c["y"] for c in cells)
    x1, y1 = max(c["x"] + c["w"] for c in cells), max(c["y"] + c["h"] for c in cells)
    return image[y0:y1, x0:x1].astype(np.float32)


def empty_lane(world: FridgeWorld, slot: str) -> None:
    while world.take(slot) is not None:
        pass


async def test_opencv_reads_the_mjpeg_stream_like_an_ip_camera(server: CameraServer) -> None:
    def read() -> tuple[bool, tuple[int, ...]]:
        cap = cv2.VideoCapture(server.url("shelf0", "mjpg"), cv2.CAP_FFMPEG)
        try:
            ok, img = cap.read()
            return ok, img.shape if ok else ()
        finally:
            cap.release()

    ok, shape = await asyncio.to_thread(read)
    assert ok and shape == (480, 640, 3)


async def test_snapshot_url_shows_what_the_customer_did(server: CameraServer, world: FridgeWorld) -> None:
    cam = Camera("shelf0", server.url("shelf0", "jpg"), timeout_s=2.0)
    try:
        a = await cam.snapshot()
        b = await cam.snapshot()
        assert server.renders("shelf0") == 1  # unchanged shelf: served from the version cache
        empty_lane(world, "F1")
        c = await cam.snapshot()
    finally:
        await cam.close()
    assert a.image.shape == (480, 640, 3) and cam.healthy and cam.counters["snapshots"] == 3
    assert np.abs(lane_roi(world, "F1", a.image) - lane_roi(world, "F1", b.image)).mean() < 2
    emptied = np.abs(lane_roi(world, "F1", a.image) - lane_roi(world, "F1", c.image)).mean()
    untouched = np.abs(lane_roi(world, "F3", a.image) - lane_roi(world, "F3", c.image)).mean()
    assert emptied > 2 * untouched  # the emptied lane changed far more than re-render jitter


async def test_stream_snapshot_is_fresh_not_a_buffered_old_frame(server: CameraServer, world: FridgeWorld) -> None:
    cam = Camera("shelf0", server.url("shelf0", "mjpg"), timeout_s=3.0)
    try:
        first = await cam.snapshot()
        await asyncio.sleep(1.0)  # the server keeps streaming the old shelf into the socket buffers
        empty_lane(world, "F2")
        t0 = time.monotonic()
        after = await cam.snapshot()
        took = time.monotonic() - t0
    finally:
        await cam.close()
    emptied = np.abs(lane_roi(world, "F2", first.image) - lane_roi(world, "F2", after.image)).mean()
    untouched = np.abs(lane_roi(world, "F4", first.image) - lane_roi(world, "F4", after.image)).mean()
    assert emptied > 2 * untouched
    assert took < 1.0
    assert cam.counters["dropped_frames"] >= 1  # it really had stale frames to throw away


@pytest.mark.parametrize("kind", ["jpg", "mjpg"])
async def test_dead_camera_is_an_error_within_the_timeout_and_recovers(server: CameraServer, kind: str) -> None:
    cam = Camera("shelf1", server.url("shelf1", kind), timeout_s=1.5)
    try:
        await cam.snapshot()
        server.fail("shelf1", "dead")
        t0 = time.monotonic()
        with pytest.raises(DeviceError) as info:
            for _ in range(3):  # a stream may still hold a frame or two sent before the failure
                await cam.snapshot()
        assert isinstance(info.value, (DeviceDisconnected, DeviceTimeout))
        assert time.monotonic() - t0 < 3 * 1.5 + 0.5
        assert not cam.healthy and cam.last_error
        server.heal("shelf1")
        frame = await cam.snapshot()
    finally:
        await cam.close()
    assert frame.image.shape == (480, 640, 3) and cam.healthy and cam.last_error is None


@pytest.mark.parametrize("kind", ["jpg", "mjpg"])
async def test_frozen_camera_times_out_without_blocking_the_loop(server: CameraServer, kind: str) -> None:
    server.fail("shelf0", "frozen")
    cam = Camera("shelf0", server.url("shelf0", kind), timeout_s=0.8)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.05)
            ticks.append(time.monotonic())

    task = asyncio.create_task(ticker())
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout):
            await cam.snapshot()
        waited = time.monotonic() - t0
    finally:
        task.cancel()
        server.heal("shelf0")
        await cam.close()
    assert 0.7 < waited < 1.3
    # the loop kept running while the camera hung: ticks all along, never a gap near the 0.8 s hang
    # (a count of ticks failed on a loaded CI machine: 9 of 16 ticks, the loop slow but never blocked)
    gaps = [b - a for a, b in zip([t0, *ticks], [*ticks, t0 + waited], strict=True)]
    assert len(ticks) >= 4 and max(gaps) < 0.4, gaps
    assert cam.counters["timeouts"] == 1


async def test_black_frame_is_a_device_fault(server: CameraServer) -> None:
    server.fail("shelf0", "black")
    cam = Camera("shelf0", server.url("shelf0", "jpg"))
    try:
        with pytest.raises(DeviceFault, match="black"):
            await cam.snapshot()
    finally:
        await cam.close()
    assert cam.counters["black_frames"] == 1 and not cam.healthy


async def test_still_image_file_and_missing_file(tmp_path: Path, world: FridgeWorld) -> None:
    path = tmp_path / "shelf2.png"
    cv2.imwrite(str(path), ShelfRenderer(world, 2).render())
    cam = Camera("shelf2", str(path))
    try:
        frame = await cam.snapshot()
    finally:
        await cam.close()
    assert frame.image.shape == (480, 640, 3) and frame.source == "shelf2"
    with pytest.raises(DeviceDisconnected):
        Camera("gone", str(tmp_path / "nope.mp4"))

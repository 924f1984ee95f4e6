"""`promtool check metrics` (Debian's prometheus package, installed by `make sysdeps`) on a live scrape
of the real daemon's /metrics: names, types, HELP text and value formatting as Prometheus reads them."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from tests.e2e.test_web_security import web  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(60)
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


async def test_promtool_check_metrics_accepts_a_live_scrape(web):  # noqa: F811
    if not os.path.exists(PROMTOOL):
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI: `make sysdeps` installs Debian's prometheus package")
        pytest.skip("promtool not installed (make sysdeps installs it)")
    s, csrf = await web.login("tech")
    async with s:  # a sale first, so counters and the revenue gauge have something to say
        r = await s.post("/api/v1/devices/test-vend", json={"slot_id": "B2", "confirm": True},
                         headers={"X-CSRF-Token": csrf})
        assert r.status == 200
        r = await s.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert r.status == 200
        text = await r.read()
    proc = await asyncio.create_subprocess_exec(PROMTOOL, "check", "metrics", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        out, _ = await proc.communicate(text)
    assert proc.returncode == 0, out.decode()
    assert out.strip() == b"", out.decode()  # no lint warnings either
    assert b"vendedge_device_events_total{" in text and b"vendedge_sync_online" in text

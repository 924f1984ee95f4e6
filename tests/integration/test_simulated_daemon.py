"""`vendedge run` with a `[simulation]` section (issue 15's out-of-process demo): the daemon's clock
runs at `time_scale` from the configured origin — what it writes into its ledger is stamped in
simulated time — while logins and sessions keep real time. The real CLI in a subprocess, real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import sys
import time

import aiohttp
import pytest

from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(90)

SCALE, START_WALL = 100_000.0, 1_800_000_000.0  # 12 h of session lifetime pass in 0.43 real seconds
PASSWORD = "a long enough secret"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _login_event(s: aiohttp.ClientSession) -> tuple[float, float, float]:
    """Log in; returns (real time before, the audit event's simulated `at`, real time after)."""
    before = time.time()
    r = await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})
    after = time.time()
    assert r.status == 200, await r.text()
    events = await (await s.get("/api/v1/events", params={"kind": "audit"})).json()
    logins = [e for e in events["events"] if e["data"]["action"] == "login"]
    return before, _ts(logins[0]["at"]), after


async def test_a_daemon_with_a_time_scale_stamps_its_ledger_in_fast_simulated_time(tmp_path):
    port, origin = _port(), time.time()
    cfg = tmp_path / "vendedge.toml"
    cfg.write_text(f'[machine]\nid = "m1"\ndata_dir = "{tmp_path / "data"}"\n'
                   f'[logging]\nlevel = "warning"\n[vend_board]\nport = "{tmp_path / "no-board"}"\n'
                   f'[web]\nport = {port}\n'
                   f"[simulation]\ntime_scale = {SCALE}\norigin_unix = {origin!r}\nstart_wall = {START_WALL}\n")
    cli = [sys.executable, "-m", "edge.cli"]
    env = {**os.environ, "NO_COLOR": "1"}
    add = await asyncio.create_subprocess_exec(*cli, "user", "add", "tech", "--password-stdin", "--config",
                                               str(cfg), env=env, stdin=asyncio.subprocess.PIPE,
                                               stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, add_err = await asyncio.wait_for(add.communicate((PASSWORD + "\n").encode()), 60)
    assert add.returncode == 0, add_err.decode()
    proc = await asyncio.create_subprocess_exec(*cli, "run", "--config", str(cfg), env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async def ready() -> bool:
                assert proc.returncode is None, "the daemon exited"
                try:
                    return (await s.get("/healthz")).status == 200
                except aiohttp.ClientConnectionError:
                    return False
            await wait_for(ready, 30, step_s=0.1, what="GET /healthz")
            a_before, a_at, a_after = await _login_event(s)
            # stamped in simulated time: the configured wall at the origin plus SCALE x the real time since
            assert START_WALL + (a_before - origin) * SCALE - 1 <= a_at <= START_WALL + (a_after - origin) * SCALE + 1
            # real time passes: past the read models' 1 s cache, so the event list shows the next login
            await wait_for(lambda: time.time() - a_after > 1.1, 5, what="1.1 s of real time")
            assert (await s.get("/api/v1/me")).status == 200  # the session (12 h) is kept in real time
            b_before, b_at, b_after = await _login_event(s)
        assert (b_before - a_after) * SCALE - 1 <= b_at - a_at <= (b_after - a_before) * SCALE + 1
        assert b_at - a_at > 12 * 3600  # more than a session's lifetime passed on the daemon's clock
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]

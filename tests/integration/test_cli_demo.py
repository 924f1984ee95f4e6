"""`vendedge demo` as a new user runs it: the banner explains both logins, the daemon and the reference
cloud run as the demo's subprocesses (`vendedge demo` execs `python -m hw_sim.demo`), Ctrl-C (SIGINT to
the whole foreground process group, as a terminal sends it) stops cleanly with the door locked, no
colours in a pipe, a busy port is a clear error, and a temp state directory does not outlive the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

DEMO = [sys.executable, "-m", "edge.cli", "demo"]


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def _read_until(proc: subprocess.Popen, marker: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    out = ""
    while marker not in out:
        assert time.monotonic() < deadline and proc.poll() is None, f"no {marker!r} in:\n{out}"
        line = proc.stdout.readline()
        out += line
    return out


def _children_cmdlines(pid: int) -> list[str]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = f.read().split()
    out = []
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode())
        except FileNotFoundError:
            continue
    return out


@pytest.mark.timeout(120)
def test_interactive_demo_banner_ctrl_c_locks_the_door_and_cleans_up(tmp_path) -> None:
    proc = subprocess.Popen([*DEMO, "--web-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(tmp_path), start_new_session=True)
    try:
        out = _read_until(proc, "Ctrl-C to stop", 90)
        out += _read_until(proc, "classic vend", 60)  # the machine is selling
        children = _children_cmdlines(proc.pid)  # `vendedge demo` became the demo: the daemon is its child
        assert any("-m edge run --config" in c for c in children), children
        assert any("refcloud" in c for c in children), children
        state = next(d for d in os.listdir(tmp_path) if d.startswith("vendedge-demo-"))
        log = (tmp_path / state / "demo.log").read_text()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "user: tech" in out and "password:" in out and "any user name, password = the admin token" in out
    assert "one-time" not in out and "\x1b[" not in out + rest
    assert '"machine_id": "demo-0001"' in log
    assert "Traceback" not in err and "door_lock_on_stop_failed" not in err + rest
    assert not any(d.startswith("vendedge-demo-") for d in os.listdir(tmp_path)), "state dir left behind"


@pytest.mark.timeout(120)
def test_ctrl_c_door_is_locked_on_stop_log_kept_with_state(tmp_path) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen([*DEMO, "--web-port", "0", "--state", str(state)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path), start_new_session=True)
    try:
        _read_until(proc, "Ctrl-C to stop", 90)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (state / "demo.log").read_text()
    assert proc.returncode == 0, err
    assert "door_lock_on_stop_failed" not in log and '"event": "daemon_stopped"' in log


def test_busy_web_port_is_a_clear_error_not_a_hang(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([*DEMO, "--web-port", str(port)], capture_output=True, text=True,
                              env=_env(tmp_path), timeout=30)
    assert done.returncode == 2
    assert f"port {port}" in done.stderr and "--web-port" in done.stderr and "Traceback" not in done.stderr
    assert not os.listdir(tmp_path)


def test_missing_socat_is_named_with_the_fix(tmp_path) -> None:
    env = {**_env(tmp_path), "PATH": str(tmp_path)}  # no socat anywhere on this PATH
    done = subprocess.run([*DEMO], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2 and "socat is not installed" in done.stderr and "make sysdeps" in done.stderr

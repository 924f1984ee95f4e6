"""The daemon as a subprocess: `python -m edge run --config CFG` (what `vendedge run` is), ready
when `GET /healthz` answers, stopped with SIGTERM (it locks the door, drains, exits 0); its stdout and
stderr go to a log file in the state directory. Accounts are made with `vendedge user add`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding edge/


class RigError(RuntimeError):
    """A subprocess did not do what the rig needs (did not start, a CLI call failed)."""


def vendedge_argv(*args: str) -> list[str]:
    """The `vendedge` command line with this interpreter (no reliance on PATH or a console script)."""
    return [sys.executable, "-m", "edge", *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment, with the project importable in the child even when run from elsewhere."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT), **(extra or {})}


async def vendedge(*args: str, stdin: str = "", timeout_s: float = 60.0) -> str:
    """Run one `vendedge` CLI command to completion; returns its stdout, raises RigError on failure."""
    proc = await asyncio.create_subprocess_exec(
        *vendedge_argv(*args), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=child_env())
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RigError(f"vendedge {' '.join(args[:2])} did not finish in {timeout_s} s") from None
    if proc.returncode != 0:
        raise RigError(f"vendedge {' '.join(args[:2])} exited {proc.returncode}: {err.decode().strip()}")
    return out.decode()


async def add_user(cfg: pathlib.Path, name: str, role: str, password: str) -> None:
    """`vendedge user add NAME --role ROLE --password-stdin --config CFG` (the password never on argv)."""
    await vendedge("user", "add", name, "--role", role, "--password-stdin", "--config", str(cfg),
                   stdin=password + "\n")


async def spawn_logged(argv: Sequence[str], log_path: pathlib.Path, env: dict[str, str] | None = None,
                       **options: Any) -> asyncio.subprocess.Process:
    """Start `argv` with stdout and stderr appended to `log_path` (the child keeps its own descriptor)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=fd,
                                                    stderr=fd, env=child_env(env), **options)
    finally:
        os.close(fd)


class DaemonProcess:
    """One daemon subprocess for `cfg`, logging to `log_path` (appended)."""

    def __init__(self, cfg: pathlib.Path, log_path: pathlib.Path, *, argv: Sequence[str] | None = None,
                 new_session: bool = False) -> None:
        self.cfg = cfg
        self.log_path = log_path
        self.argv = list(argv or vendedge_argv("run", "--config", str(cfg)))
        self.new_session = new_session  # True: a terminal's Ctrl-C reaches only us, we stop it in order
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, health_url: str, timeout_s: float = 30.0) -> None:
        """Spawn and wait until `health_url` answers 200; RigError (with the log's end) if it exits first."""
        self.proc = await spawn_logged(self.argv, self.log_path, start_new_session=self.new_session)
        try:
            await wait_http_ok(health_url, timeout_s, alive=lambda: self.running)
        except RigError as exc:
            await self.stop()
            raise RigError(f"daemon did not start ({exc}); its log ends:\n{self.log_tail()}") from None

    async def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait (the daemon locks the door and drains); SIGKILL if it hangs. The exit code."""
        return await stop_process(self.proc, timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


async def stop_process(proc: asyncio.subprocess.Process | None, timeout_s: float) -> int | None:
    """SIGTERM, wait, SIGKILL if it hangs (a process we started, by its own handle); its exit code."""
    if proc is None:
        return None
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode


def log_tail(path: pathlib.Path, lines: int = 30) -> str:
    """The end of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


async def wait_http_ok(url: str, timeout_s: float, *, alive: Callable[[], bool] | None = None,
                       headers: dict[str, str] | None = None) -> None:
    """Poll `url` until it answers 200. `alive()` False (the process died) ends the wait at once."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            if alive is not None and not alive():
                raise RigError("the process exited")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise RigError(f"{url} did not answer in {timeout_s} s")
            await asyncio.sleep(0.05)

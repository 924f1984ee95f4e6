"""A virtual RS-485 adapter: a socat pty pair whose master-side link appears at a chosen path.

`unplug` kills socat (both ptys vanish, like pulling a USB adapter); `start` again re-creates the
link at the same path.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import time


class PtyLink:
    """socat pty pair: `path` for the daemon side, `path + '.sim'` for the simulator side."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.sim_path = self.path + ".sim"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout_s: float = 5.0) -> None:
        """Create the pty pair and wait until both links exist."""
        if self.running:
            return
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat not found: apt-get install -y socat")
        for p in (self.path, self.sim_path):
            pathlib.Path(p).unlink(missing_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            socat, f"pty,raw,echo=0,link={self.path}", f"pty,raw,echo=0,link={self.sim_path}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # its own session: a terminal's Ctrl-C (SIGINT to the whole foreground group) must not take the
            # adapter away before the daemon has locked the door on its way down
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not (os.path.exists(self.path) and os.path.exists(self.sim_path)):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"socat did not create {self.path}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Kill our socat (by its own pid) and remove the links."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(2.0):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for p in (self.path, self.sim_path):
            pathlib.Path(p).unlink(missing_ok=True)

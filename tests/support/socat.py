"""A linked pair of real serial devices from socat (``pty,raw,echo=0``), for tests of serial drivers."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from collections.abc import Iterator

from tests.support.waits import wait_until


@contextlib.contextmanager
def socat_pair(directory: pathlib.Path, a: str = "ttyHost", b: str = "ttyPeer") -> Iterator[tuple[str, str]]:
    """Two tty paths under ``directory`` wired to each other by socat; socat is stopped on exit."""
    first, second = str(directory / a), str(directory / b)
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={first}", f"pty,raw,echo=0,link={second}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: proc.poll() is not None or (os.path.exists(first) and os.path.exists(second)),
                   5.0, step_s=0.01, what="socat's two ptys")
        assert proc.returncode is None, "socat exited"
        yield first, second
    finally:
        proc.terminate()
        proc.wait(5)

"""Shared fixtures: leak checks (tasks and threads), temp state dirs, the demo planogram."""

from __future__ import annotations

import os
import pathlib
import tempfile


def _environment_of_test_processes() -> None:
    """Set before anything imports numpy: this conftest loads ahead of every test module and ahead of
    the xdist workers, and the daemons, CLIs and fuzzers the tests start inherit it."""
    # One BLAS thread per process. Two xdist workers on 2 cores, each with an OpenBLAS pool as wide as the
    # machine, spin against each other: the SVD of a product's 168 enrollment views (96 before enroll-2)
    # (vision_models.pairs.spread_stats) took 0.28 s instead of 0.012 s, the vision tests 98 s instead of 54 s.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # With PYTHONDONTWRITEBYTECODE set, every Python process a test starts (a daemon, each restart after a
    # SIGKILL, a CLI run, schemathesis with our hooks) compiled the whole package again: 0.25 s of its
    # 0.9 s start. Those processes keep bytecode in a private cache outside the source tree instead.
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        cache = pathlib.Path(tempfile.gettempdir()) / f"vendedge-pycache-{os.getuid()}"
        try:
            cache.mkdir(mode=0o700, exist_ok=True)
            ours = cache.stat().st_uid == os.getuid() and not cache.is_symlink()
        except OSError:
            ours = False
        if ours:
            del os.environ["PYTHONDONTWRITEBYTECODE"]
            os.environ["PYTHONPYCACHEPREFIX"] = str(cache)


_environment_of_test_processes()

import asyncio  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from hw_sim.world import load_demo_planogram  # noqa: E402


@pytest.fixture(autouse=True)
async def _no_leaked_tasks():
    """Fail any async test that leaves tasks running behind it (pymodbus' habit)."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for t in leaked:
        t.cancel()
    assert not leaked, f"leaked tasks: {[t.get_name() for t in leaked]}"


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    before = {t.ident for t in threading.enumerate()}
    yield
    extra = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
             and not t.daemon and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))]
    for t in extra:  # a closed aiosqlite connection's worker may still be on its way out
        t.join(timeout=2.0)
    extra = [t for t in extra if t.is_alive()]
    assert not extra, f"leaked threads: {[t.name for t in extra]}"


@pytest.fixture
def planogram_doc() -> dict:
    return load_demo_planogram()


@pytest.fixture
def planogram_file(tmp_path, planogram_doc):
    p = tmp_path / "planogram.json"
    p.write_text(json.dumps(planogram_doc))
    return str(p)

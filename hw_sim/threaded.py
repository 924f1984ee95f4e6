"""Driving a simulator that runs on its own event loop in another thread (e.g. beside a daemon
subprocess): one thread-safe call helper for every such runner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any, timeout_s: float = 5.0) -> Any:
    """Run `fn(*args)` (plain or async) on `loop` from another thread; return its result."""
    async def invoke() -> Any:
        result = fn(*args)
        return await result if asyncio.iscoroutine(result) else result

    return asyncio.run_coroutine_threadsafe(invoke(), loop).result(timeout_s)

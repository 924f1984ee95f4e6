"""Driving a simulator that runs on its own event loop in another thread (e.g. beside a daemon
subprocess): one thread-safe call helper for every such runner."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


def call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any, timeout_s: float = 5.0) -> Any:
    """Run `fn(*args)` (plain or async) on `loop` from another thread; return its result."""
    async def invoke() -> Any:
        result = fn(*args)
        return await result if asyncio.iscoroutine(result) else result

    return asyncio.run_coroutine_threadsafe(invoke(), loop).result(timeout_s)


class LoopThread:
    """Simulators served from their own event loop in a background thread (beside a daemon
    subprocess). Subclasses say what to start (`_serve`) and how to shut it down (`_close`)."""

    name = "sim"

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    async def _serve(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the thread and wait until everything serves; a start-up error is raised here."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"{self.name}: simulators did not start within {timeout_s} s")
        if self._error is not None:
            self.stop()
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except Exception as exc:  # handed to the starting thread, which raises it
            self._error = exc
        self._ready.set()
        if self._error is None:
            self._loop.run_forever()
        self._loop.run_until_complete(self._close())
        self._loop.close()

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float = 5.0) -> Any:
        """Run `fn(*args)` (plain or async) on the simulators' loop, thread-safely; returns its result."""
        return call_in_loop(self._loop, fn, *args, timeout_s=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)

"""Waiting in tests: poll a condition until it holds or a deadline passes, never a fixed sleep.

`wait_for` (async) and `wait_until` (blocking, for tests that drive threads or a subprocess) both fail
with an AssertionError that names what was awaited, so a timeout reads like any other failed check.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

Predicate = Callable[[], Any]  # returns a truthy value, or an awaitable of one (async `wait_for` only)


async def wait_for(predicate: Predicate, timeout_s: float = 10.0, *, step_s: float = 0.01,
                   what: str = "") -> bool:
    """Poll `predicate` (plain or async) every `step_s` until it is truthy; fail after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return True
                await asyncio.sleep(step_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what or _name(predicate)}") from None


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, *, step_s: float = 0.02,
               what: str = "") -> bool:
    """The blocking twin of `wait_for`, for code outside an event loop."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or _name(predicate)}")
        time.sleep(step_s)
    return True


async def poll(fetch: Callable[[], Awaitable[Any]], accept: Callable[[Any], Any], timeout_s: float = 10.0,
               *, step_s: float = 0.02, what: str = "") -> Any:
    """Await `fetch()` until `accept(value)` holds; returns that value (a ledger row, a reply ...)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                value = await fetch()
                if accept(value):
                    return value
                await asyncio.sleep(step_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what or _name(accept)}") from None


def _name(fn: Any) -> str:
    try:
        return inspect.getsource(fn).strip()
    except (OSError, TypeError):
        return repr(fn)

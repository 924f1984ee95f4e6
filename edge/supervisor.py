"""One supervisor owns every long-lived task; a crashed task is logged and restarted with backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)


@dataclass
class TaskInfo:
    name: str
    factory: Callable[[], Awaitable[None]]
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Runs named tasks forever. A task that returns normally is done; one that raises is restarted."""

    def __init__(self, *, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.tasks: dict[str, TaskInfo] = {}
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._stopping = False

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        info = TaskInfo(name, factory)
        self.tasks[name] = info
        info.task = asyncio.create_task(self._guard(info), name=name)

    async def _guard(self, info: TaskInfo) -> None:
        delay = self.backoff_initial_s
        while not self._stopping:
            try:
                await info.factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a crashed task must never take the process down
                info.restarts += 1
                info.last_error = f"{type(exc).__name__}: {exc}"
                log.error("task_crashed", task=info.name, error=info.last_error, restarts=info.restarts,
                          exc_info=True)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self.backoff_max_s)

    async def stop(self) -> None:
        self._stopping = True
        running = [i.task for i in self.tasks.values() if i.task and not i.task.done()]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def status(self) -> dict[str, dict[str, object]]:
        return {n: {"running": bool(i.task and not i.task.done()), "restarts": i.restarts,
                    "last_error": i.last_error} for n, i in self.tasks.items()}

"""One supervisor owns every long-lived task.

A task that raises is logged (with its traceback the first time, one line after that), counted,
handed to its `on_crash` hook (a hub marks its devices offline), and restarted with backoff; a task
restarted `restart_alarm_after` times within `restart_window_s` raises an alarm, cleared once it has
run `stable_after_s` without crashing. A task spawned with `stale_after_s` must show progress (its
`beat()`, or the `progress()` clock it was given) at least that often: `stale()` names the ones that
do not, and the systemd watchdog is fed only while that list is empty (a hung task gets the daemon
restarted instead of a wedged machine that looks alive).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from drivers.backoff import Backoff
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.sdnotify import notify

log = structlog.get_logger(__name__)

# (alarm_key, active, message, data): raise (active=True) or clear an alarm in the ledger
AlarmSink = Callable[[str, bool, str, Mapping[str, Any]], Awaitable[None]]


@dataclass
class TaskInfo:
    """One supervised task: its factory, health and restart history."""

    name: str
    factory: Callable[[], Awaitable[None]]
    stale_after_s: float | None = None
    progress: Callable[[], float] | None = None  # monotonic time of the task's own last progress
    on_crash: Callable[[BaseException], None] | None = None
    restarts: int = 0
    last_error: str | None = None
    state: str = "starting"  # running | backoff | done | stopped
    last_beat: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.monotonic)
    crashes: deque[float] = field(default_factory=lambda: deque(maxlen=32), repr=False)
    alarmed: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def beat(self) -> None:
        """The task made progress (call it once per loop turn)."""
        self.last_beat = time.monotonic()

    def last_progress(self) -> float:
        return max(self.last_beat, self.progress()) if self.progress is not None else self.last_beat

    @property
    def alarm_key(self) -> str:
        return f"task_restarting:{self.name}"


class Supervisor:
    """Runs named tasks. A task that returns normally is done; one that raises is restarted."""

    def __init__(
        self,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        restart_alarm_after: int = 3,
        restart_window_s: float = 600.0,
        stable_after_s: float = 60.0,
        on_alarm: AlarmSink | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.tasks: dict[str, TaskInfo] = {}
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.restart_alarm_after, self.restart_window_s = restart_alarm_after, restart_window_s
        self.stable_after_s = stable_after_s
        self.on_alarm = on_alarm
        self.crashes_total = 0
        self._rng = rng or random.Random()
        self._stopping = False
        self._watchdog_withheld = False

    def spawn(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        stale_after_s: float | None = None,
        progress: Callable[[], float] | None = None,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> TaskInfo:
        """Start `factory()` as task `name`; returns its TaskInfo (`.beat()` reports progress)."""
        old = self.tasks.get(name)
        if old is not None and old.task is not None and not old.task.done():
            raise ValueError(f"task {name!r} is already running")
        info = TaskInfo(name, factory, stale_after_s=stale_after_s, progress=progress, on_crash=on_crash)
        self.tasks[name] = info
        info.task = asyncio.create_task(self._guard(info), name=name)
        return info

    async def _guard(self, info: TaskInfo) -> None:
        backoff: Backoff | None = None  # made at the first crash, from the settings in force then
        while not self._stopping:
            info.state, info.started_at = "running", time.monotonic()
            info.beat()
            try:
                await info.factory()
                info.state = "done"
                return
            except asyncio.CancelledError:
                info.state = "stopped"
                raise
            except Exception as exc:  # a crashed task must never take the process down
                await self._crashed(info, exc)
            if backoff is None:
                backoff = Backoff(self.backoff_initial_s, self.backoff_max_s, self._rng)
            if time.monotonic() - info.started_at >= self.stable_after_s:
                backoff.reset()  # it ran fine for a while: this is a new failure, not a crash loop
            info.state = "backoff"
            await asyncio.sleep(backoff.next())

    async def _crashed(self, info: TaskInfo, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        info.restarts += 1
        self.crashes_total += 1
        if error != info.last_error:  # log once with the traceback, then one line per repeat
            log.error("task_crashed", task=info.name, error=error, restarts=info.restarts, exc_info=exc)
        else:
            log.warning("task_crashed_again", task=info.name, error=error, restarts=info.restarts)
        info.last_error = error
        if info.on_crash is not None:
            try:
                info.on_crash(exc)
            except Exception:
                log.exception("task_on_crash_failed", task=info.name)
        now = time.monotonic()
        info.crashes.append(now)
        recent = sum(1 for t in info.crashes if now - t <= self.restart_window_s)
        if recent >= self.restart_alarm_after and not info.alarmed:
            info.alarmed = True
            await self._alarm(
                info.alarm_key,
                True,
                f"task {info.name} restarted {recent} times: {error}",
                {"task": info.name, "restarts": info.restarts, "error": error},
            )

    async def _alarm(self, key: str, active: bool, message: str, data: Mapping[str, Any]) -> None:
        if self.on_alarm is None:
            return
        try:
            await self.on_alarm(key, active, message, data)
        except Exception:  # the ledger being unwell must not stop supervision
            log.exception("task_alarm_failed", alarm_key=key)

    async def check(self) -> list[str]:
        """Clear restart alarms of tasks that have run `stable_after_s` since their last crash; return
        the names of stale tasks (running, with a heartbeat older than their `stale_after_s`)."""
        now = time.monotonic()
        for info in self.tasks.values():
            if info.alarmed and info.state == "running" and now - info.started_at >= self.stable_after_s:
                info.alarmed = False
                await self._alarm(info.alarm_key, False, f"task {info.name} stable again", {})
        return self.stale(now)

    def stale(self, now: float | None = None) -> list[str]:
        """Running tasks whose heartbeat has not moved within their `stale_after_s`."""
        now = time.monotonic() if now is None else now
        return sorted(
            i.name
            for i in self.tasks.values()
            if i.state == "running"
            and i.stale_after_s is not None
            and now - i.last_progress() > i.stale_after_s
        )

    async def watchdog(self, interval_s: float, *, feed: bool = True) -> None:
        """Forever: `check()`, and send systemd `WATCHDOG=1` only while no task is stale (when `feed`)."""
        while True:
            stale = await self.check()
            if stale:
                if not self._watchdog_withheld:
                    log.error("watchdog_withheld", stale=stale)
                self._watchdog_withheld = True
            else:
                if self._watchdog_withheld:
                    log.info("watchdog_resumed")
                self._watchdog_withheld = False
                if feed:
                    notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)

    async def stop(self) -> None:
        """Cancel every task and wait for each to end (re-cancelling one that swallowed a cancel)."""
        self._stopping = True
        running = {i.task for i in self.tasks.values() if i.task is not None and not i.task.done()}
        for _ in range(20):
            if not running:
                break
            for t in running:
                t.cancel()
            _, running = await asyncio.wait(running, timeout=0.5)
        if running:
            log.error("tasks_would_not_stop", tasks=sorted(t.get_name() for t in running))

    def status(self) -> dict[str, dict[str, object]]:
        stale = set(self.stale())
        return {
            n: {
                "running": bool(i.task and not i.task.done()),
                "state": i.state,
                "restarts": i.restarts,
                "last_error": i.last_error,
                "stale": n in stale,
            }
            for n, i in self.tasks.items()
        }


def ledger_alarms(db: LedgerDB) -> AlarmSink:
    """An `on_alarm` sink that raises/clears `task_restarting:<name>` alarms in the ledger."""

    async def sink(key: str, active: bool, message: str, data: Mapping[str, Any]) -> None:
        async with db.tx() as tx:
            if active:
                await repo.raise_alarm(tx, key, "task_restarting", message, severity="warning", data=data)
            else:
                await repo.clear_alarm(tx, key, message)

    return sink

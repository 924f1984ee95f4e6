"""The supervisor: crashed tasks are restarted with backoff and alarmed when they keep crashing (real
SQLite ledger), and the systemd watchdog is fed only while every task's heartbeat moves (a real
AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable

import pytest

from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.supervisor import Supervisor, ledger_alarms
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(30)


async def until(pred, timeout_s: float = 5.0) -> None:
    await wait_for(pred, timeout_s)


def count_checks(sup: Supervisor) -> Callable[[], int]:
    """Count the supervisor's `check()` calls: the watchdog loop makes one per interval, so a test can
    wait for N watchdog rounds instead of sleeping N intervals."""
    calls = [0]
    real = sup.check

    async def check() -> list[str]:
        calls[0] += 1
        return await real()
    sup.check = check  # type: ignore[method-assign]
    return lambda: calls[0]


async def active_alarms(db: LedgerDB) -> dict[str, dict]:
    return {a["alarm_key"]: a for a in await repo.active_alarms(db)}


async def test_a_crashing_task_is_restarted_counted_alarmed_and_cleared_when_stable(tmp_path):
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"))
    sup = Supervisor(
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        restart_alarm_after=3,
        stable_after_s=0.3,
        on_alarm=ledger_alarms(db),
    )
    runs: list[int] = []
    crashes: list[str] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) <= 4:
            raise IndexError("list index out of range")  # the kind of bug that killed the Modbus poll task
        await asyncio.Event().wait()

    try:
        info = sup.spawn("flaky", flaky, on_crash=lambda exc: crashes.append(type(exc).__name__))
        await until(lambda: len(runs) == 5)
        assert info.restarts == 4 and crashes == ["IndexError"] * 4 and sup.crashes_total == 4
        alarm = (await active_alarms(db))["task_restarting:flaky"]
        assert alarm["kind"] == "task_restarting" and "IndexError" in alarm["message"]
        assert sup.status()["flaky"]["running"] and sup.status()["flaky"]["restarts"] == 4

        async def cleared() -> bool:
            assert await sup.check() == []
            return "task_restarting:flaky" not in await active_alarms(db)
        await wait_for(cleared, 5.0, what="the restart alarm to clear")
        # cleared by a check once the task had run stably for stable_after_s, not before
        assert time.monotonic() - info.started_at >= sup.stable_after_s
    finally:
        await sup.stop()
        await db.close()


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; `$NOTIFY_SOCKET` names it."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.path = path

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    async def wait_fed(self, times: int = 1, timeout_s: float = 5.0) -> list[str]:
        """Until `times` WATCHDOG=1 datagrams have come; returns every datagram received meanwhile."""
        got: list[str] = []

        def fed() -> bool:
            got.extend(self.drain())
            return got.count("WATCHDOG=1") >= times
        await wait_for(fed, timeout_s, what=f"{times} WATCHDOG=1 datagrams")
        return got


async def test_a_hung_task_stops_the_watchdog_being_fed_and_a_recovered_one_resumes_it(tmp_path, monkeypatch):
    notify_sock = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", notify_sock.path)
    sup = Supervisor()
    hang = asyncio.Event()
    resume = asyncio.Event()

    async def worker() -> None:
        while True:
            info.beat()
            if hang.is_set():  # wedged: awaits something that never comes, the task is still "running"
                await resume.wait()
                hang.clear()
            await asyncio.sleep(0.02)

    try:
        checks = count_checks(sup)
        info = sup.spawn("worker", worker, stale_after_s=0.3)
        sup.spawn("watchdog", lambda: sup.watchdog(0.05))
        await notify_sock.wait_fed(4)  # healthy: fed every interval
        hang.set()
        await until(lambda: sup.stale() == ["worker"], timeout_s=2.0)
        notify_sock.drain()
        rounds = checks()
        await until(lambda: checks() >= rounds + 10)  # ten watchdog rounds with a hung task ...
        assert notify_sock.drain() == []  # ... and systemd heard nothing
        assert sup.status()["worker"]["stale"] is True
        resume.set()
        await notify_sock.wait_fed()  # the task moves again: the watchdog is fed again
    finally:
        await sup.stop()
        notify_sock.sock.close()


async def test_stop_cancels_every_task_even_one_that_swallows_a_cancel():
    sup = Supervisor()
    swallowed = []
    waiting = asyncio.Event()

    async def stubborn() -> None:
        try:
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # what pymodbus' wait_for can do on 3.11 when a reply races
            swallowed.append(1)
        await asyncio.Event().wait()

    info = sup.spawn("stubborn", stubborn)
    await waiting.wait()
    await sup.stop()
    assert swallowed == [1] and info.task is not None and info.task.done()


class BrokenMap:
    """A register map whose read plan raises: a bug in the poll path, not a device fault."""

    def __init__(self, real) -> None:
        self.real = real

    @property
    def blocks(self):
        raise RuntimeError("bug in the poll path")

    def __getattr__(self, name):
        return getattr(self.real, name)


async def test_a_crashed_modbus_poll_task_takes_its_devices_offline_with_alarms_and_is_restarted(tmp_path):
    from tests.support.rigs.fridge import start_fridge_rig

    rig = await start_fridge_rig(str(tmp_path), speed=2000, poll_s=0.02, restock_grace_s=0)
    try:
        db, sup = rig.daemon.db, rig.daemon.supervisor
        await until(lambda: all(d.online for d in rig.plant.devices.values()))
        (bus,) = rig.plant.hubs.values()
        task = sup.tasks[bus.poll_task_name]
        sup.backoff_initial_s, sup.backoff_max_s = 0.05, 0.1
        fridge = rig.plant.devices[next(k for k, r in rig.plant.roles.items() if r == "fridge")]
        fridge.regmap = BrokenMap(fridge.regmap)
        await until(lambda: task.restarts >= 1 and not any(d.online for d in rig.plant.devices.values()))
        assert bus.counters["crashes"] >= 1 and "RuntimeError" in (task.last_error or "")
        assert all("poll task crashed" in (d.last_error or "") for d in rig.plant.devices.values())

        async def offline_alarms_are(want: set[str]) -> bool:
            return {k for k in await active_alarms(db) if k.startswith("device_offline:")} == want

        want = {f"device_offline:{k}" for k in rig.plant.devices}
        await wait_for(lambda: offline_alarms_are(want), 5.0, what=f"alarms {want}")
        fridge.regmap = fridge.regmap.real  # the bug is gone: the restarted task polls again
        await until(lambda: all(d.online for d in rig.plant.devices.values()))
        await wait_for(lambda: offline_alarms_are(set()), 5.0, what="the offline alarms to clear")
        assert sup.status()[bus.poll_task_name]["running"]
    finally:
        await rig.stop()


async def test_the_daemon_supervises_the_live_update_publisher(tmp_path):
    from tests.support.rigs.fridge import start_fridge_rig

    rig = await start_fridge_rig(str(tmp_path), speed=200, poll_s=0.05)
    try:
        assert (
            rig.daemon.web_runner is None
        )  # the rig runs without the page: start one on the daemon's wiring
        from edge.web.app import start_web
        from edge.web.sse import TASK_NAME

        web_cfg = dataclasses.replace(rig.daemon.config.web, host="127.0.0.1", port=0)
        runner = await start_web(
            rig.daemon.machine, web_cfg, rig.daemon.secrets, spawn=rig.daemon.supervisor.spawn
        )
        try:
            status = rig.daemon.supervisor.status()
            assert status[TASK_NAME]["running"] and status[TASK_NAME]["restarts"] == 0
        finally:
            await runner.cleanup()
    finally:
        await rig.stop()


async def test_the_daemon_withholds_the_systemd_watchdog_while_its_board_watch_is_wedged_on_the_ledger(
    tmp_path, monkeypatch
):
    """The real daemon under WatchdogSec: fed while healthy; a task stuck behind a ledger write lock held
    by another process stops the datagrams; when the lock goes, the watchdog is fed again."""
    import os
    import sqlite3

    import edge.daemon
    from tests.reliability.inproc import start_inproc

    notify_sock = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", notify_sock.path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: fed every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setattr(edge.daemon, "BOARD_WATCH_STALE_S", 1.0)
    rig = await start_inproc(tmp_path / "rig")
    try:
        sup = rig.daemon.supervisor
        checks = count_checks(sup)
        assert "READY=1\nSTATUS=selling" in await notify_sock.wait_fed(2)
        other = sqlite3.connect(rig.daemon.ledger_path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the ledger's write lock
            await rig.sim.unplug()  # the board watch must write an alarm: it waits on the lock
            await until(lambda: "vend_board.watch" in rig.daemon.supervisor.stale(), timeout_s=3.0)
            notify_sock.drain()
            rounds = checks()
            await until(lambda: checks() >= rounds + 5)  # five watchdog rounds (0.1 s each) ...
            assert "WATCHDOG=1" not in notify_sock.drain()  # ... unfed: systemd would restart us now
        finally:
            other.execute("ROLLBACK")
            other.close()
        await until(lambda: not sup.stale(), timeout_s=3.0)
        await notify_sock.wait_fed()
        assert "device_offline:vend_board" in await rig.alarms()  # the wedged write went through after all
    finally:
        await rig.stop()
        notify_sock.sock.close()


@pytest.mark.timeout(10)
def test_notify_never_blocks_when_systemd_does_not_read(tmp_path, monkeypatch):
    """A full notify queue drops the datagram (False) instead of blocking the event loop's thread."""
    from edge.sdnotify import notify

    listener = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    try:
        sent = [notify("WATCHDOG=1") for _ in range(5000)]  # far past the kernel's datagram queue
        assert sent[0] is True and sent[-1] is False
        assert len(listener.drain()) == sent.count(True)
    finally:
        listener.sock.close()

"""One door, whichever device carries the lock and the switch (config `door.source`).

`Door` journals every unlock (an `events` row *before* the command leaves), relocks on start and
on shutdown (fail safe), tells listeners when the door opens and closes (take-and-go starts and
ends a session on them) and raises the door-open-too-long and door-forced alarms.
Backends: the vend board (`unlock_door(ms, seq)`, relocks by itself) or the Modbus I/O module
(`lock_coil` ON = locked, `door_closed` input; we relock when the unlock window ends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from drivers.errors import DeviceError
from drivers.modbus import ModbusDevice
from edge.clock import SystemClock
from edge.config import DoorConfig
from edge.core.alarms import Clear, DoorOpenRule, Raise, RuleState
from edge.core.errors import SaleRefused
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.temperature import apply_alarm_effects

log = structlog.get_logger(__name__)

COMMAND_TIMEOUT_S = 5.0
FORCED_ALARM = "door_forced"

ChangeCallback = Callable[[bool | None, bool | None], None]  # (closed, locked); None = unknown


@dataclass(frozen=True)
class DoorEvent:
    """What listeners get: `kind` is "opened" or "closed"; `at` is wall time."""

    kind: str
    at: float
    open_s: float | None = None  # for "closed": how long it was open


class DoorBackend(Protocol):
    self_relocking: bool  # the device relocks by itself when the unlock window ends

    async def unlock(self, ms: int, seq: int) -> None: ...

    async def lock(self, seq: int) -> None: ...

    async def read(self) -> tuple[bool, bool]: ...

    def on_change(self, cb: ChangeCallback) -> None: ...


class VendBoardDoor:
    """Door lock and switch on the classic vend board (the board relocks after `ms`)."""

    self_relocking = True

    def __init__(self, board: Any) -> None:
        self.board = board

    async def unlock(self, ms: int, seq: int) -> None:
        await self.board.unlock_door(min(ms, 0xFFFF), seq)

    async def lock(self, seq: int) -> None:
        """The board has no lock verb: shorten any open unlock window to 1 ms (the latch catches on close)."""
        state = await self.board.door_state()
        if not state.locked:
            await self.board.unlock_door(1, seq)

    async def read(self) -> tuple[bool, bool]:
        state = await self.board.door_state()
        return bool(state.closed), bool(state.locked)

    def on_change(self, cb: ChangeCallback) -> None:
        self.board.on_event(lambda st: cb(bool(st.closed), bool(st.locked)))


class IoModuleDoor:
    """Door on a Modbus digital I/O module: `lock_coil` (ON = locked) and `door_closed`."""

    self_relocking = False

    def __init__(self, device: ModbusDevice) -> None:
        self.device = device

    async def unlock(self, ms: int, seq: int) -> None:
        await self.device.write("lock_coil", False)

    async def lock(self, seq: int) -> None:
        await self.device.write("lock_coil", True)

    async def read(self) -> tuple[bool, bool]:
        v = await self.device.read_now()
        return bool(v["door_closed"]), bool(v["lock_coil"])

    def on_change(self, cb: ChangeCallback) -> None:
        def poll(dev: ModbusDevice) -> None:
            if not dev.online or "door_closed" not in dev.values:
                cb(None, None)
            else:
                cb(bool(dev.values["door_closed"]), bool(dev.values.get("lock_coil", True)))

        self.device.subscribe(poll)


class Door:
    """The machine's door: unlock/lock commands, state, listeners, alarms. Run `run()` supervised."""

    def __init__(self, db: LedgerDB, backend: DoorBackend, config: DoorConfig, *,
                 clock: SystemClock | None = None, time_scale: float = 1.0, tick_s: float = 0.5) -> None:
        self.db, self.backend, self.config = db, backend, config
        self.clock = clock or SystemClock()
        self.time_scale = time_scale  # simulated seconds per real second (demo); 1.0 on a machine
        self.tick_s = tick_s
        self.closed: bool | None = None
        self.locked: bool | None = None
        self.open_since: float | None = None  # wall time
        self._open_mono: float | None = None
        self._rule = DoorOpenRule(max_open_s=config.open_too_long_s)
        self._rule_state = RuleState()
        self._changes: asyncio.Queue[tuple[bool | None, bool | None]] = asyncio.Queue(maxsize=1000)
        self._listeners: dict[str, list[Callable[[DoorEvent], None]]] = {"opened": [], "closed": []}
        self._relock_at: float | None = None  # loop time when an I/O-module unlock window ends
        self._relock_failed = False
        self.last_cycle = time.monotonic()  # the run loop's heartbeat (the supervisor watches it)
        self._start_failures = 0
        self.safe = False  # locked and state read at least once since start
        self.refusing = False  # set by `shutdown_lock`: no unlock is accepted any more
        self._locked_for_stop = False  # `shutdown_lock` locked it: `stop` need not again
        self.counters = {"unlocks": 0, "openings": 0, "unlock_failures": 0}
        backend.on_change(self._on_change)

    # ---- public API --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """{closed, locked, open_since (wall ts or None)}; None values mean "not known yet"."""
        return {"closed": self.closed, "locked": self.locked, "open_since": self.open_since}

    def on_opened(self, cb: Callable[[DoorEvent], None]) -> None:
        """Call `cb(DoorEvent)` (synchronously, from the door task) when the door opens."""
        self._listeners["opened"].append(cb)

    def on_closed(self, cb: Callable[[DoorEvent], None]) -> None:
        self._listeners["closed"].append(cb)

    @property
    def max_unlock_ms(self) -> int:
        """The longest window this door takes: a board's latch counts u16 ms; the daemon times an I/O module."""
        return 0xFFFF * (1 if self.backend.self_relocking else 100)

    async def unlock(self, ms: int | None = None, reason: str = "", *, actor: str = "") -> None:
        """Journal, then unlock for `ms` (default `door.unlock_ms`). Raises DeviceError on failure."""
        if self.refusing:
            raise SaleRefused("stopping", "the machine is shutting down: the door stays locked")
        ms = int(ms if ms is not None else self.config.unlock_ms)
        if not 1 <= ms <= self.max_unlock_ms:
            raise ValueError(f"unlock ms {ms} out of range")
        async with self.db.tx() as tx:
            seq = await repo.next_board_seq(tx)
            await tx.event("door_unlock_requested", {"ms": ms, "reason": reason, "actor": actor, "seq": seq})
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self.backend.unlock(ms, seq)
        except (DeviceError, TimeoutError) as exc:
            self.counters["unlock_failures"] += 1
            async with self.db.tx() as tx:
                await tx.event("door_unlock_failed", {"seq": seq, "error": str(exc)}, severity="warning")
            log.warning("door_unlock_failed", seq=seq, error=str(exc))
            raise
        self.counters["unlocks"] += 1
        self.locked = False
        async with self.db.tx() as tx:
            await tx.event("door_unlocked", {"seq": seq, "ms": ms, "reason": reason}, sync=False)
        log.info("door_unlocked", seq=seq, ms=ms, reason=reason, actor=actor)
        if not self.backend.self_relocking:  # `run` relocks when the window ends (and retries until it can)
            self._relock_at = asyncio.get_running_loop().time() + ms / 1000.0 / self.time_scale

    async def lock(self) -> None:
        """Lock now (fail safe). Raises DeviceError when the device cannot be told."""
        async with self.db.tx() as tx:
            seq = await repo.next_board_seq(tx)
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            await self.backend.lock(seq)
        self._relock_at = None
        if not self.backend.self_relocking:
            self.locked = True
        log.info("door_locked", seq=seq)

    async def start(self) -> None:
        """Lock on start (a restart may have left it open) and read the current state."""
        try:
            await self.lock()
            closed, locked = await self.backend.read()
        except (DeviceError, TimeoutError) as exc:
            # `run` retries every tick: say it once, then quietly until it works
            (log.debug if self._start_failures else log.warning)("door_lock_on_start_failed", error=str(exc))
            self._start_failures += 1
            return
        if self._start_failures:
            log.info("door_locked_after_retry", attempts=self._start_failures + 1)
        self._apply(closed, locked, initial=True)
        self.safe = True

    async def shutdown_lock(self, timeout_s: float = 2.0) -> bool:
        """Refuse every further unlock, then lock, retried for `timeout_s` (a start that failed half-way,
        the bus still connecting, or one reply lost on a loaded machine: before, a door confirmed safe got
        one attempt, and a single timeout at Ctrl-C left it unlocked). Returns False when the lock
        could not be told."""
        self.refusing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                await self.lock()
                self._locked_for_stop = True
                return True
            except (DeviceError, TimeoutError) as exc:
                if loop.time() >= deadline:
                    log.error("door_lock_on_stop_failed", error=str(exc))
                    return False
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    async def stop(self) -> None:
        """Lock on shutdown; a failure is logged (the hardware's own fail-safe default holds). Nothing
        to do when `shutdown_lock` already locked it: no unlock has been accepted since."""
        if self._locked_for_stop:
            return
        try:
            await self.lock()
        except (DeviceError, TimeoutError) as exc:
            log.error("door_lock_on_stop_failed", error=str(exc))

    async def run(self) -> None:
        """Process door changes, relock when an unlock window ends and check open-too-long every tick
        (supervised task 'door'; `last_cycle` is its heartbeat)."""
        loop = asyncio.get_running_loop()
        while True:
            self.last_cycle = time.monotonic()
            wait = self.tick_s if self._relock_at is None else min(self.tick_s, self._relock_at - loop.time())
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    closed, locked = await self._changes.get()
            except TimeoutError:
                if self._relock_at is not None and loop.time() >= self._relock_at:
                    await self._relock()
                if not self.safe:
                    await self.start()
                await self._check_open_too_long()
                continue
            await self._handle_change(closed, locked)

    @property
    def stale_after_s(self) -> float:
        """`last_cycle` moves at least this often while `run` is healthy (a tick plus the slowest command)."""
        return self.tick_s + 3 * COMMAND_TIMEOUT_S + 5.0

    # ---- internals ---------------------------------------------------------------------------

    def _on_change(self, closed: bool | None, locked: bool | None) -> None:
        if (closed, locked) == (self.closed, self.locked) and self._changes.empty():
            return  # Modbus subscribers hear every poll; only changes matter
        if self._changes.full():
            self._changes.get_nowait()
        self._changes.put_nowait((closed, locked))

    def _apply(self, closed: bool | None, locked: bool | None, *, initial: bool = False) -> list[DoorEvent]:
        """Update state; returns opened/closed events for listeners."""
        events: list[DoorEvent] = []
        if closed is None:  # device offline: keep what we knew, the offline alarm covers it
            return events
        wall, mono = self.clock.wall(), self.clock.monotonic()
        if not closed and self.closed is not False:
            self.open_since, self._open_mono = wall, mono
            if not initial:
                events.append(DoorEvent("opened", wall))
        elif closed and self.closed is False:
            open_s = None if self._open_mono is None else round(mono - self._open_mono, 1)
            self.open_since = self._open_mono = None
            events.append(DoorEvent("closed", wall, open_s))
        self.closed, self.locked = closed, locked
        return events

    async def _handle_change(self, closed: bool | None, locked: bool | None) -> None:
        was_locked = self.locked
        events = self._apply(closed, locked)
        effects: list[Any] = []
        for ev in events:
            if ev.kind == "opened":
                self.counters["openings"] += 1
                if was_locked:  # opened while the latch was locked: forced or a broken latch
                    effects.append(Raise(FORCED_ALARM, "door_forced", "door opened while locked", "critical"))
        if closed and locked:
            effects.append(Clear(FORCED_ALARM, "door closed and locked"))
        if closed is not None:
            self._rule_state, eff = self._rule.evaluate(self._rule_state, closed, self.clock.monotonic())
            effects += eff
        if events or effects:
            async with self.db.tx() as tx:
                for ev in events:
                    await tx.event(f"door_{ev.kind}", {"open_s": ev.open_s} if ev.open_s is not None else {})
                await apply_alarm_effects(tx, effects)
        for ev in events:
            log.info(f"door_{ev.kind}", open_s=ev.open_s)
            for cb in self._listeners[ev.kind]:
                try:
                    cb(ev)
                except Exception:  # a listener's bug must not stop door supervision
                    log.exception("door_listener_failed", kind=ev.kind)

    async def _check_open_too_long(self) -> None:
        if self.closed is None:
            return
        self._rule_state, effects = self._rule.evaluate(self._rule_state, self.closed, self.clock.monotonic())
        if effects:
            async with self.db.tx() as tx:
                await apply_alarm_effects(tx, effects)

    async def _relock(self) -> None:
        """The unlock window ended: lock. On failure the relock stays due and is tried every tick."""
        try:
            await self.lock()
        except (DeviceError, TimeoutError) as exc:
            (log.debug if self._relock_failed else log.error)("door_relock_failed", error=str(exc))
            self._relock_failed = True
            self._relock_at = asyncio.get_running_loop().time() + self.tick_s
            return
        if self._relock_failed:
            log.info("door_relocked_after_retry")
        self._relock_failed = False

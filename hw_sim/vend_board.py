"""A simulated spiral/motor vend board that speaks the real wire protocol (v2) over a pty or TCP.

It enforces what the driver relies on: HELLO tells the boot id and how many vend outcomes survive
a reset (``memory``); VEND is ACKed at once and finished by an unsolicited VEND_DONE with the same
seq; a seq already seen is never executed again (the board answers with the stored result, or ACK
while the motor still runs); a VEND or DOOR_UNLOCK addressed to another boot id is refused
(NAK stale_boot); one motor at a time (BUSY). Faults are scripted: ``jam``, ``no_drop``,
``overcurrent``, ``garble``, ``silence``, ``unplug``/``replug``, and for protocol v2 ``brownout``
(a reset at a chosen instant of the next vend), ``lose_vend_done``, ``power_cycle`` (a reset now), ``miswire`` (another
slot turns and is reported) and ``bad_outcome`` (an outcome code outside the protocol).
Motor current (VEND_DONE's long form): flat ``motor_ma`` with noise, or per slot from an attached
``hw_sim.wear.Spiral`` at ``wear_time_s`` (a spiral that starts to bind draws more, then jams);
``report_current = False`` makes a board that sends the short form (no current).
Serving (pty/TCP, line faults, the thread runner) is ``hw_sim/vend_board_serving.py``.
Imports only the driver's pure codec (see ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.vend_board.codec import (
    PROTOCOL_VERSION,
    Ack,
    DoorStateReply,
    DoorStateReq,
    DoorUnlockReq,
    ErrorCode,
    Frame,
    HelloReply,
    HelloReq,
    LightReq,
    MotorCurrent,
    Nak,
    StatusReply,
    StatusReq,
    VendDone,
    VendReq,
    VendResultReply,
    VendResultReq,
    VendState,
)
from hw_sim.serial_link import Peer
from hw_sim.vend_board_serving import BoardPorts, SimThread, run_in_thread
from hw_sim.wear import Spiral

__all__ = ["BROWNOUT_POINTS", "FIRMWARE", "SimThread", "SimVendBoard", "run_in_thread"]

log = structlog.get_logger(__name__)

SEQ_MEMORY = 1024
STATUS_COUNTERS = ("vends", "duplicates", "jams", "busy", "crc_errors", "resets", "stale_boot")
FIRMWARE = "simvend-2.0"
# When a scripted brown-out strikes during the next vend:
#   before_ack  the VEND arrives and the board resets before acting on it (nothing moves)
#   after_ack   ACK sent, in_progress recorded, reset before the motor turns (nothing falls)
#   mid_motor   reset half-way through the motor run (nothing falls)
#   at_drop     the item falls, reset before the outcome is recorded (the board can only say interrupted)
#   after_drop  the item falls and the outcome is recorded, reset before VEND_DONE leaves
#   during_result  the vend finishes normally; the board resets on the next VEND_RESULT request
BROWNOUT_POINTS = ("before_ack", "after_ack", "mid_motor", "at_drop", "after_drop", "during_result")


@dataclass
class _Vend:
    seq: int
    slot: str  # the slot that really turns (== asked unless miswired)
    peer: Peer
    state: VendState = VendState.IN_PROGRESS
    outcome: int | None = None
    motor_ms: int = 0
    current: MotorCurrent | None = None


@dataclass
class _Brownout:
    when: str
    deaf_s: float


class SimVendBoard(BoardPorts):
    """The board: stock per slot, motor timing (``motor_ms / speed``) and current, door lock, faults.

    ``memory``: how many vend outcomes survive a reset (0: the board forgets every seq on reset).
    """

    def __init__(self, stock: dict[str, int], *, motor_ms: int = 1200, speed: float = 1.0,
                 seed: int = 0, memory: int = SEQ_MEMORY, motor_ma: int = 260) -> None:
        super().__init__(seed)
        self.stock: dict[str, int] = dict(stock)
        self.dispensed: dict[str, int] = dict.fromkeys(stock, 0)
        self.dispensed_by_seq: dict[int, int] = collections.defaultdict(int)  # items that fell per VEND seq
        self.vend_frames_received = 0
        self.door_closed = True
        self.door_locked = True
        self.light_on = False
        self.motor_ms = motor_ms
        self.last_motor_ms = 0  # simulated motor time of the last finished vend (benchmarks subtract it)
        self.speed = speed
        self.memory = memory
        self.motor_ma = motor_ma  # healthy mean running current of every spiral without a wear model
        self.report_current = True  # False: a board that sends the short VEND_DONE (no current)
        self.spirals: dict[str, Spiral] = {}  # slot -> wear model (run time, jams and current)
        self.wear_time_s = 0.0  # the simulated age the wear models are read at (the caller moves it)
        self._amp_rng = random.Random(f"{seed}:current")
        self.boot = self._new_boot()
        self._faults: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self._miswired: dict[str, str] = {}
        self._bad_outcomes: collections.deque[int] = collections.deque()
        self._brownouts: collections.deque[_Brownout] = collections.deque()
        self._lose_done = 0
        self._results: collections.OrderedDict[int, _Vend] = collections.OrderedDict()
        self._unlocks: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._busy: _Vend | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._relock: asyncio.TimerHandle | None = None
        self._relock_on_close = False

    @property
    def total_dispensed(self) -> int:
        return sum(self.dispensed.values())

    def _new_boot(self) -> int:
        return self._rng.randrange(1, 0xFFFF_FFFF)

    async def stop(self) -> None:
        """Stop motors and timers, close every port."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._relock is not None:
            self._relock.cancel()
        await super().stop()

    # ---- fault script ------------------------------------------------------------------------

    def jam(self, slot: str, times: int = 1) -> None:
        """The next ``times`` vends of ``slot`` jam after half the motor time; nothing falls."""
        self._faults[slot].extend(["jam"] * times)

    def no_drop(self, slot: str, times: int = 1) -> None:
        """The motor turns fully but the drop sensor sees nothing (item hung): stock unchanged."""
        self._faults[slot].extend(["no_drop"] * times)

    def overcurrent(self, slot: str, times: int = 1) -> None:
        """The motor trips on overcurrent after a quarter turn; nothing falls."""
        self._faults[slot].extend(["overcurrent"] * times)

    def attach(self, spiral: Spiral) -> None:
        """Run ``spiral.slot`` from a wear model: its run time, jams and current at ``wear_time_s``."""
        self.spirals[spiral.slot] = spiral

    def lose_vend_done(self, times: int = 1) -> None:
        """The next ``times`` VEND_DONE frames are lost on the wire (the controller must ask VEND_RESULT)."""
        self._lose_done += times

    def brownout(self, when: str, deaf_s: float = 0.8) -> None:
        """The supply sags during the next vend: the board resets at ``when`` (see BROWNOUT_POINTS)
        and is deaf for ``deaf_s`` board seconds before it runs again with a new boot id."""
        if when not in BROWNOUT_POINTS:
            raise ValueError(f"brownout point {when!r} not one of {BROWNOUT_POINTS}")
        self._brownouts.append(_Brownout(when, deaf_s))

    def miswire(self, slot: str, actual: str) -> None:
        """Vends asked of ``slot`` turn ``actual``'s motor, and the board reports ``actual``."""
        self._miswired[slot] = actual

    def bad_outcome(self, code: int, times: int = 1) -> None:
        """The next ``times`` finished vends report outcome ``code`` (outside 0..4: a firmware bug)."""
        self._bad_outcomes.extend([code] * times)

    def open_door(self, force: bool = False) -> bool:
        """A person pulls the door; a locked door stays shut unless ``force``. Returns whether it opened."""
        if self.door_locked and not force:
            return False
        if self.door_closed:
            self.door_closed = False
            self._door_event()
        return True

    def close_door(self) -> None:
        """The door swings shut; the latch relocks if the unlock window has already expired."""
        changed = not self.door_closed
        self.door_closed = True
        if self._relock_on_close:
            self._relock_on_close = False
            self.door_locked = True
            changed = True
        if changed:
            self._door_event()

    # ---- resets ------------------------------------------------------------------------------

    def power_cycle(self, deaf_s: float = 0.8) -> None:
        """Reset now: the motor stops, RAM is lost (seq memory too unless ``memory``), deaf for
        ``deaf_s`` board seconds, then a new boot id announced by an unsolicited DOOR_STATE."""
        self.counters["resets"] += 1
        busy, self._busy = self._busy, None
        for task in list(self._tasks):
            task.cancel()
        if busy is not None and busy.state is VendState.IN_PROGRESS:
            busy.state = VendState.INTERRUPTED
        if self.memory == 0:
            self._results.clear()
        else:
            while len(self._results) > self.memory:
                self._results.popitem(last=False)
        self._unlocks.clear()
        self._deaf = True
        log.info("sim_vend_board_reset", deaf_s=deaf_s)
        asyncio.get_running_loop().call_later(deaf_s / self.speed, self._power_up)

    def _power_up(self) -> None:
        self._deaf = False
        self.boot = self._new_boot()
        self._readers.clear()
        log.info("sim_vend_board_booted", boot=self.boot)
        self._door_event()

    def _brownout_at(self, when: str) -> bool:
        """Pop and fire the scripted brown-out if it is due at ``when``."""
        if self._brownouts and self._brownouts[0].when == when:
            self.power_cycle(self._brownouts.popleft().deaf_s)
            return True
        return False

    def _handle(self, peer: Peer, frame: Frame) -> None:
        boot = self.boot
        match frame:
            case VendReq():
                self._on_vend(peer, frame)
            case VendResultReq(seq, target):
                if self._brownout_at("during_result"):
                    return
                rec = self._results.get(target)
                if rec is None:
                    self._send(peer, VendResultReply(seq, target, VendState.UNKNOWN, None, None, 0, boot))
                else:
                    self._send(peer, VendResultReply(seq, target, rec.state, rec.outcome,
                                                     None if rec.outcome is None else rec.slot, rec.motor_ms, boot,
                                                     rec.current if rec.outcome is not None else None))
            case HelloReq(seq):
                last = max([*self._results, *self._unlocks], default=0)
                self._send(peer, HelloReply(seq, PROTOCOL_VERSION, self.memory, FIRMWARE, last, boot))
            case StatusReq(seq):
                counters = {k: self.counters[k] for k in STATUS_COUNTERS}  # a frame holds ≤ 128 payload bytes
                self._send(peer, StatusReply(seq, FIRMWARE, self._busy is not None, self.door_closed,
                                             self.door_locked, counters, boot))
            case DoorUnlockReq(seq, ms, to_boot):
                if to_boot != boot:
                    self.counters["stale_boot"] += 1
                    self._send(peer, Nak(seq, ErrorCode.STALE_BOOT, boot))
                    return
                if seq not in self._unlocks:  # a retried unlock (same seq) is not a second unlock
                    self._remember(self._unlocks, seq, None)
                    self._unlock(ms)
                self._send(peer, Ack(seq, boot))
            case DoorStateReq(seq):
                self._send(peer, DoorStateReply(seq, self.door_closed, self.door_locked, boot))
            case LightReq(seq, on):
                self.light_on = on
                self._send(peer, Ack(seq, boot))
            case _:  # a response code sent to the board
                self._send(peer, Nak(frame.seq, ErrorCode.BAD_FRAME, boot))

    @staticmethod
    def _remember(table: collections.OrderedDict[int, Any], seq: int, value: Any) -> None:
        table[seq] = value
        while len(table) > SEQ_MEMORY:
            table.popitem(last=False)

    # ---- vending -----------------------------------------------------------------------------

    def _on_vend(self, peer: Peer, req: VendReq) -> None:
        self.vend_frames_received += 1
        boot = self.boot
        if req.boot != boot:
            self.counters["stale_boot"] += 1
            self._send(peer, Nak(req.seq, ErrorCode.STALE_BOOT, boot))
            return
        rec = self._results.get(req.seq)
        if rec is not None:  # idempotency: never run a seq twice
            self.counters["duplicates"] += 1
            rec.peer = peer
            if rec.state is VendState.IN_PROGRESS:
                self._send(peer, Ack(req.seq, boot))
            elif rec.outcome is not None:
                self._send(peer, VendDone(req.seq, rec.slot, rec.outcome, rec.motor_ms, boot, rec.current))
            return
        if req.slot not in self.stock:
            self._send(peer, Nak(req.seq, ErrorCode.BAD_SLOT, boot))
            return
        if self._busy is not None:
            self.counters["busy"] += 1
            self._send(peer, Nak(req.seq, ErrorCode.BUSY, boot))
            return
        if self._brownout_at("before_ack"):
            return
        rec = _Vend(req.seq, self._miswired.get(req.slot, req.slot), peer)
        self._remember(self._results, req.seq, rec)  # recorded (and, with memory, persisted) before the motor
        self._busy = rec
        self._send(peer, Ack(req.seq, boot))
        if self._brownout_at("after_ack"):
            return
        task = asyncio.get_running_loop().create_task(self._run_motor(rec), name=f"sim.vend.{req.seq}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_motor(self, rec: _Vend) -> None:
        outcome, run_ms, current = self._plan(rec.slot)
        if self._brownouts and self._brownouts[0].when == "mid_motor":
            await asyncio.sleep(run_ms / 2000 / self.speed)
            self._brownout_at("mid_motor")
            return
        await asyncio.sleep(run_ms / 1000 / self.speed)
        if outcome == ErrorCode.OK:
            self.stock[rec.slot] -= 1
            self.dispensed[rec.slot] += 1
            self.dispensed_by_seq[rec.seq] += 1
        if self._bad_outcomes:
            outcome = self._bad_outcomes.popleft()
        if self._brownout_at("at_drop"):
            return
        self._busy = None
        self.counters["vends"] += 1
        self.counters["jams"] += outcome == ErrorCode.JAM
        rec.state, rec.outcome, rec.motor_ms = VendState.DONE, outcome, run_ms
        rec.current = current if self.report_current else None
        self.last_motor_ms = run_ms
        if self._brownout_at("after_drop"):
            return
        if self._lose_done > 0:
            self._lose_done -= 1
            return
        self._send(rec.peer, VendDone(rec.seq, rec.slot, outcome, run_ms, self.boot, rec.current))

    def _plan(self, slot: str) -> tuple[int, int, MotorCurrent]:
        """Decide the outcome, the motor run time (board ms, before ``speed`` scaling) and current."""
        if self.stock[slot] <= 0:
            return ErrorCode.EMPTY, 0, MotorCurrent(0, 0)  # the board tracks its count: no motor
        full = round(self.motor_ms * self._rng.uniform(0.95, 1.05))
        mean = round(self.motor_ma * max(0.5, self._amp_rng.gauss(1.0, 0.04)))
        fault = self._faults[slot].popleft() if self._faults[slot] else None
        if fault == "jam":
            return ErrorCode.JAM, full // 2, MotorCurrent(3 * mean, 4 * mean)  # stalled until cut
        if fault == "overcurrent":
            return ErrorCode.MOTOR_OVERCURRENT, full // 4, MotorCurrent(4 * mean, 6 * mean)  # tripped
        if fault == "no_drop":
            return ErrorCode.DROP_NOT_DETECTED, full, MotorCurrent(mean, round(mean * 1.25))
        spiral = self.spirals.get(slot)
        if spiral is not None:
            run = spiral.run(self.wear_time_s)
            return ErrorCode.JAM if run.jammed else ErrorCode.OK, run.motor_ms, MotorCurrent(run.mean_ma, run.peak_ma)
        return ErrorCode.OK, full, MotorCurrent(mean, round(mean * 1.25))

    # ---- door --------------------------------------------------------------------------------

    def _unlock(self, ms: int) -> None:
        if self._relock is not None:
            self._relock.cancel()
        self._relock_on_close = False
        if self.door_locked:
            self.door_locked = False
            self._door_event()
        self._relock = asyncio.get_running_loop().call_later(ms / 1000 / self.speed, self._relock_now)

    def _relock_now(self) -> None:
        self._relock = None
        if not self.door_closed:
            self._relock_on_close = True  # the latch catches when the door next closes
            return
        self.door_locked = True
        self._door_event()

    def _door_event(self) -> None:
        """Unsolicited DOOR_STATE (seq 0) to every connected controller."""
        self._broadcast(DoorStateReply(0, self.door_closed, self.door_locked, self.boot))

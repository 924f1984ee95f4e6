"""A minimal vend board written from ``docs/protocols/vend-board.md`` (v2) alone, with faults on command.

It shares no code with ``drivers/vend_board`` or ``hw_sim``: its own frame codec (``encode``/``decode``,
CRC-16/CCITT-FALSE computed bit by bit), its own board semantics, on the master side of a real pty
(``os.openpty()`` + a symlink the daemon opens like ``/dev/ttyUSB0``), in a thread of its own.

It keeps the *truth* the daemon's ledger is checked against: the stock really in each spiral
(``stock``) and the items that really fell for each VEND seq (``dropped``), whatever it tells the
controller. ``plan(Fault(...))`` scripts how it misbehaves on the next new VEND(s);
``reboot(deaf_s)`` resets it now. It also notes what the *controller* does that the protocol forbids
(``violations``): a VEND for a seq it ACKed in an earlier boot, more copies of a VEND than one try plus
the retries, a VEND for a seq already finished.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from typing import NamedTuple

SOF = 0xA6
V1_SOF = 0xA5
MAX_PAYLOAD = 128

HELLO, STATUS, VEND, VEND_RESULT, DOOR_UNLOCK, DOOR_STATE, LIGHT = 0x07, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
ACK, NAK, STATUS_REPLY, VEND_DONE, VEND_RESULT_REPLY, DOOR_STATE_REPLY, HELLO_REPLY = (
    0x80,
    0x81,
    0x82,
    0x83,
    0x84,
    0x85,
    0x86,
)
OUTCOMES = {"ok": 0, "jam": 1, "empty": 2, "motor_overcurrent": 3, "drop_not_detected": 4}
BAD_SLOT, BUSY, BAD_FRAME, STALE_BOOT = 5, 6, 7, 8
ST_UNKNOWN, ST_IN_PROGRESS, ST_DONE, ST_INTERRUPTED = 0, 1, 2, 3
NO_OUTCOME = 0xFF


# ---- codec ------------------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, bit by bit: poly 0x1021, init 0xFFFF, not reflected, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


class Frame(NamedTuple):
    seq: int
    boot: int
    code: int
    payload: bytes


def encode(seq: int, boot: int, code: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload too long")
    body = bytes([len(payload)]) + seq.to_bytes(4, "big") + boot.to_bytes(4, "big") + bytes([code]) + payload
    return bytes([SOF]) + body + crc16(body).to_bytes(2, "big")


def decode(buf: bytes) -> tuple[int, Frame | None]:
    """``(0, None)`` need more bytes; ``(n, None)`` drop n bytes (garbage, or a bad frame's SOF);
    ``(n, frame)`` a frame of n bytes. Codes and payloads are not judged here."""
    if not buf:
        return 0, None
    if buf[0] != SOF:
        at = buf.find(bytes([SOF]))
        return (len(buf) if at < 0 else at), None
    if len(buf) < 2:
        return 0, None
    n = buf[1]
    if n > MAX_PAYLOAD:
        return 1, None
    if len(buf) < n + 13:
        return 0, None
    body = buf[1 : n + 11]
    if crc16(body) != int.from_bytes(buf[n + 11 : n + 13], "big"):
        return 1, None
    return n + 13, Frame(
        int.from_bytes(body[1:5], "big"), int.from_bytes(body[5:9], "big"), body[9], bytes(body[10:])
    )


def slot_bytes(slot: str | None) -> bytes:
    if not slot:
        return b"\x00\x00"
    return bytes([ord(slot[0]), int(slot[1:])])


def current_bytes(current: tuple[int, int] | None) -> bytes:
    """The optional motor-current tail of VEND_DONE / a done VEND_RESULT_REPLY: mean_ma u16, peak_ma u16
    (empty for a board that does not report current: the short form)."""
    if current is None:
        return b""
    return current[0].to_bytes(2, "big") + current[1].to_bytes(2, "big")


def slot_str(b: bytes) -> str | None:
    if b == b"\x00\x00":
        return None
    if not (0x41 <= b[0] <= 0x5A and 1 <= b[1] <= 99):
        raise ValueError(f"bad slot {b.hex()}")
    return f"{chr(b[0])}{b[1]}"


def encode_v1(seq: int, code: int, payload: bytes = b"") -> bytes:
    """A v1 frame as the doc's probe shows it: A5, LEN, SEQ u32, CODE, payload, CRC over LEN..payload."""
    body = bytes([len(payload)]) + seq.to_bytes(4, "big") + bytes([code]) + payload
    return bytes([V1_SOF]) + body + crc16(body).to_bytes(2, "big")


# ---- faults -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    """How the board misbehaves on one VEND (every reply about that seq)."""

    dup: bool = False  # every reply sent twice
    late_s: float = 0.0  # ACK and VEND_RESULT replies held back this long (past the reply timeout)
    ack_late_s: float = 0.0  # only the ACKs held back this long
    wrong_seq: bool = False  # before each reply, the same reply with an older seq and with a never-used one
    replay: bool = False  # before each reply, the last frames this board sent (maybe from an older boot)
    noise: bool = False  # random bytes (with stray SOFs) before and after each reply
    split: bool = False  # replies written one byte at a time
    truncate: bool = False  # the first ACK and the VEND_DONE are cut short
    silent_done: bool = False  # VEND_DONE never sent (VEND_RESULT still answered)
    motor_ms: int | None = None  # motor run time (default 100..300 ms)
    outcome: str = "ok"  # what the drop sensor decides
    reboot_mid_motor: float | None = None  # reset half way through the motor, deaf this long
    reboot_after_drop: float | None = None  # reset right after the drop decided, deaf this long
    done_code: int | None = None  # VEND_DONE outcome byte sent instead of the real one
    result_code: int | None = None  # VEND_RESULT_REPLY outcome byte sent instead of the real one
    bad_results: int | None = None  # only the first this many VEND_RESULT replies carry result_code
    turn_slot: str | None = None  # miswired: this slot's motor turns (and is named)
    ack_boot: int | None = None  # ACK sent with this boot id
    report: str | None = None  # a lying drop sensor: this outcome is reported whatever happened
    nak_code: int | None = None  # the VEND is answered NAK with this code (nothing runs)
    ack_code: int | None = None  # the VEND is answered with this response code instead of ACK (it runs)
    reboot_before_ack: float | None = None  # reset on receiving the VEND, before ACK (seq not recorded)
    reboot_after_accept: float | None = None  # seq recorded (memory), then reset before the ACK and motor
    result_state: int | None = None  # VEND_RESULT_REPLY state byte sent instead of the real one
    result_target: int | None = None  # VEND_RESULT_REPLY names this target seq instead of the asked one
    result_slot_none: bool = False  # VEND_RESULT_REPLY done with slot 00 00
    forget: bool = False  # after the drop the board forgets the seq without a reset (and sends no VEND_DONE)
    done_slot: bytes | None = None  # VEND_DONE names these two slot bytes (e.g. 00 00, "no slot")
    drop_acks: int = 0  # this many ACKs for the VEND are never sent (VEND_DONE still is)
    reset_on_query: float | None = None  # the first VEND_RESULT about the seq: reset at once (deaf this long)
    lose_vends: int = 0  # this many copies of the VEND are lost on the line before one gets through
    current: tuple[int, int] | None = None  # (mean_ma, peak_ma) the board measures (default 150..400 mA)


@dataclasses.dataclass
class Record:
    state: str  # running | done | started (in memory from an earlier boot: interrupted)
    slot: str | None = None
    outcome: int = NO_OUTCOME
    motor_ms: int = 0
    boot: int = 0
    current: tuple[int, int] | None = None  # (mean_ma, peak_ma) when the board reports current


# ---- the board --------------------------------------------------------------------------------------


class AdversarialBoard:
    """The board on a pty. ``start()`` / ``stop()``; every public method is thread safe."""

    def __init__(
        self,
        link: str,
        stock: dict[str, int],
        *,
        memory: int = 1024,
        seed: int = 1,
        v1_only: bool = False,
        fw: str = "adv2",
        report_current: bool = True,
    ) -> None:
        self.link, self.memory, self.v1_only, self.fw = link, memory, v1_only, fw
        self.report_current = report_current  # False: the short VEND_DONE / VEND_RESULT_REPLY
        self.rng = random.Random(seed)
        self.amp_rng = random.Random(seed + 1)  # current figures: the faults' random stream stays as it was
        self.lock = threading.RLock()
        self.stock = dict(stock)  # truth: items in each spiral
        self.dropped: dict[int, int] = collections.defaultdict(int)  # truth: items fallen per VEND seq
        self.turned: dict[int, str] = {}  # the slot whose motor turned for a seq
        self.violations: list[str] = []  # what the controller did that the protocol forbids
        self.vend_copies: dict[int, int] = collections.defaultdict(int)  # VEND frames received per seq
        self.acked_in_boot: dict[int, int] = {}  # seq -> boot that ACKed it
        self.received: list[Frame] = []
        self.sent: list[bytes] = []
        self.reboots = 0
        self.boot = self._new_boot()
        self.deaf_until = 0.0
        self.memory_after_reset: int | None = None  # the memory the board comes up with after its next reset
        self.ram: dict[int, Record] = {}
        self.doors: set[int] = set()  # DOOR_UNLOCK seqs of this boot
        self.last_seq_override: int | None = None
        self.nvm: collections.OrderedDict[int, Record] = collections.OrderedDict()
        self.faults: dict[int, Fault] = {}
        self._plans: collections.deque[Fault] = collections.deque()
        self._motor: int | None = None  # seq whose motor runs
        self._motor_gen = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._out: list[tuple[float, int, bytes]] = []  # (due, order, bytes) waiting to be written
        self._tail = 0.0  # when the last queued byte goes out
        self._on_sent: dict[int, Callable[[], None]] = {}
        self._inbuf = bytearray()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)

    # ---- control (test thread) ----------------------------------------------------------------------

    def start(self) -> str:
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.symlink(os.ttyname(self.slave), self.link)
        with self.lock:
            self._announce()
        self._thread = threading.Thread(target=self._run, name="adversarial-board", daemon=True)
        self._thread.start()
        return self.link

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if os.path.lexists(self.link):
            os.unlink(self.link)

    def plan(self, *faults: Fault) -> None:
        """The next new VENDs the board accepts misbehave like these, in order."""
        with self.lock:
            self._plans.extend(faults)

    def clear_plans(self) -> None:
        with self.lock:
            self._plans.clear()

    def heal(self) -> None:
        """From now on every reply about every seq is honest (the scripted faults stop)."""
        with self.lock:
            self._plans.clear()
            self.faults = {seq: Fault() for seq in self.faults}

    def reboot(self, deaf_s: float = 0.3) -> None:
        with self.lock:
            self._reset(deaf_s)

    def line_noise(self, data: bytes) -> None:
        """``data`` goes on the line now, behind whatever is queued (a glitch the controller must survive)."""
        with self.lock:
            self._write(data)

    def memory_at_next_reset(self, n: int) -> None:
        """The board comes up from its next reset keeping ``n`` outcomes (0: it forgot everything)."""
        with self.lock:
            self.memory_after_reset = n

    def set_memory(self, n: int) -> None:
        """Takes effect as the board's next HELLO_REPLY says (use before a reboot)."""
        with self.lock:
            self.memory = n
            self._trim()

    def restock(self, stock: dict[str, int]) -> None:
        with self.lock:
            self.stock.update(stock)

    def busy(self) -> bool:
        with self.lock:
            return self._motor is not None or time.monotonic() < self.deaf_until

    def answer_for(self, seq: int) -> tuple[int, int, str | None]:
        """(state, outcome, slot) this board would give for VEND_RESULT seq right now."""
        with self.lock:
            return self._result(seq)[:3]

    def snapshot(self) -> tuple[dict[str, int], dict[int, int], dict[int, str]]:
        with self.lock:
            return dict(self.stock), dict(self.dropped), dict(self.turned)

    # ---- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                now = time.monotonic()
                while self._events and self._events[0][0] <= now:
                    _, _, fn = heapq.heappop(self._events)
                    fn()
                self._flush(now)
                wake = min(
                    [t for t, _, _ in self._events[:1]] + [t for t, _, _ in self._out[:1]] + [now + 0.02]
                )
            try:
                ready, _, _ = select.select([self.master], [], [], max(0.0, wake - time.monotonic()))
            except (OSError, ValueError):
                return
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    time.sleep(0.01)
                    continue
                with self.lock:
                    self._feed(data)

    def _flush(self, now: float) -> None:
        while self._out and self._out[0][0] <= now:
            _, order, data = heapq.heappop(self._out)
            try:
                os.write(self.master, data)
            except OSError:
                continue  # nobody reads the pty right now (the daemon is down): the bytes are lost
            if order in self._on_sent:
                self._on_sent.pop(order)()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (time.monotonic() + delay, next(self._counter), fn))

    def _write(
        self, data: bytes, delay: float = 0.0, split: bool = False, on_sent: Callable[[], None] | None = None
    ) -> None:
        """Queue bytes for the line. The line is serial: a write never overtakes or interleaves with one
        queued before it (a late reply holds back what follows it, as on a real UART). ``on_sent`` runs
        once the last byte is out (not if a reset drops it first)."""
        due = max(time.monotonic() + delay, self._tail)
        step = 0.002 if split else 0.0
        chunks = [bytes([b]) for b in data] if split else [data]
        for i, chunk in enumerate(chunks):
            order = next(self._counter)
            heapq.heappush(self._out, (due + i * step, order, chunk))
        if on_sent is not None:
            self._on_sent[order] = on_sent
        self._tail = due + len(chunks) * step

    # ---- receiving ----------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if time.monotonic() < self.deaf_until:
            return  # browned out: nothing is heard
        self._inbuf += data
        if self.v1_only:
            self._feed_v1()
            return
        while self._inbuf:
            used, frame = decode(bytes(self._inbuf))
            if used == 0:
                return
            del self._inbuf[:used]
            if frame is not None:
                self.received.append(frame)
                self._handle(frame)

    def _feed_v1(self) -> None:
        """A v1 board: only A5 frames; anything else is line noise to it."""
        buf = self._inbuf
        while buf:
            if buf[0] != V1_SOF:
                del buf[0]
                continue
            if len(buf) < 2 or len(buf) < buf[1] + 9:
                return
            n = buf[1]
            body = bytes(buf[1 : n + 7])
            ok = crc16(body) == int.from_bytes(buf[n + 7 : n + 9], "big")
            if not ok:
                del buf[0]
                continue
            del buf[: n + 9]
            seq, code = int.from_bytes(body[1:5], "big"), body[5]
            if code == STATUS:
                payload = bytes([len(self.fw)]) + self.fw.encode() + b"\x00\x01\x01\x00"
                self._write(encode_v1(seq, STATUS_REPLY, payload))

    def _last_seq(self) -> int:
        """HELLO_REPLY's last_seq: the highest VEND/DOOR_UNLOCK seq this board remembers (doc, rule 1)."""
        if self.last_seq_override is not None:  # a board bug: e.g. 0xFFFFFFFF meaning "none"
            return self.last_seq_override
        known = list(self.ram) + list(self.doors) + (list(self.nvm) if self.memory > 0 else [])
        return max(known, default=0)

    def _handle(self, f: Frame) -> None:
        if f.code == HELLO:
            self._reply(
                f.seq,
                HELLO_REPLY,
                bytes([2])
                + self.memory.to_bytes(2, "big")
                + self._last_seq().to_bytes(4, "big")
                + bytes([len(self.fw)])
                + self.fw.encode(),
            )
        elif f.code == STATUS:
            payload = (
                bytes([len(self.fw)])
                + self.fw.encode()
                + bytes([self._motor is not None, 1, 1, 1, 5])
                + b"vends"
                + sum(self.dropped.values()).to_bytes(4, "big")
            )
            self._reply(f.seq, STATUS_REPLY, payload)
        elif f.code == VEND and len(f.payload) == 2:
            self._vend(f)
        elif f.code == VEND_RESULT and len(f.payload) == 4:
            target = int.from_bytes(f.payload, "big")
            armed = self.faults.get(target)
            if armed is not None and armed.reset_on_query is not None:  # browns out as the question comes
                deaf, armed.reset_on_query = armed.reset_on_query, None
                self._reset(deaf)
                return
            state, outcome, slot, motor_ms, current = self._result(target)
            fault = self.faults.get(target, Fault())
            if state == ST_DONE and fault.result_code is not None and fault.bad_results != 0:
                outcome = fault.result_code
                if fault.bad_results is not None:
                    fault.bad_results -= 1
            if fault.result_state is not None:
                state = fault.result_state
            if fault.result_slot_none:
                slot = None
            said = target if fault.result_target is None else fault.result_target
            if fault.result_target is not None:  # answer about that seq instead
                state, outcome, slot, motor_ms, current = self._result(said)
            payload = (
                said.to_bytes(4, "big")
                + bytes([state, outcome])
                + slot_bytes(slot)
                + motor_ms.to_bytes(2, "big")
                + (current_bytes(current) if state == ST_DONE else b"")
            )
            self._reply(f.seq, VEND_RESULT_REPLY, payload, fault, late=True)
        elif f.code == DOOR_UNLOCK and len(f.payload) == 2:
            if f.boot != self.boot:
                self._reply(f.seq, NAK, bytes([STALE_BOOT]))
            else:  # a known seq is ACKed without unlocking again (this boot only)
                self.doors.add(f.seq)
                self._reply(f.seq, ACK)
        elif f.code == DOOR_STATE and not f.payload:
            self._reply(f.seq, DOOR_STATE_REPLY, b"\x01\x01")
        elif f.code == LIGHT and len(f.payload) == 1:
            self._reply(f.seq, ACK)
        else:
            self._reply(f.seq, NAK, bytes([BAD_FRAME]))

    def _known(self, seq: int) -> Record | None:
        if seq in self.ram:
            return self.ram[seq]
        return self.nvm.get(seq) if self.memory > 0 else None

    def _result(self, seq: int) -> tuple[int, int, str | None, int, tuple[int, int] | None]:
        rec = self._known(seq)
        if rec is None:
            return ST_UNKNOWN, NO_OUTCOME, None, 0, None
        if rec.state == "running":
            return ST_IN_PROGRESS, NO_OUTCOME, None, 0, None
        if rec.state == "started":
            return ST_INTERRUPTED, NO_OUTCOME, None, 0, None
        return ST_DONE, rec.outcome, rec.slot, rec.motor_ms, rec.current

    def _vend(self, f: Frame) -> None:
        seq = f.seq
        try:
            slot = slot_str(f.payload)
        except ValueError:
            slot = None
        self.vend_copies[seq] += 1
        if seq not in self.faults and self._plans and self._plans[0].lose_vends > 0:
            self._plans[0].lose_vends -= 1  # lost on the line (as if its CRC failed): no answer
            return
        if seq in self.acked_in_boot and self.acked_in_boot[seq] != self.boot:
            self.violations.append(
                f"VEND {seq} (addressed to boot {f.boot:#x}) sent again after boot "
                f"{self.acked_in_boot[seq]:#x} had ACKed it and reset"
            )
        if f.boot != self.boot:
            self._reply(seq, NAK, bytes([STALE_BOOT]))
            return
        rec = self._known(seq)
        if rec is not None:
            fault = self.faults.get(seq, Fault())
            if rec.state == "running":
                self._reply(seq, fault.ack_code or ACK, b"", fault, late=True, vend_ack=True)
            elif rec.state == "done":
                self._send_done(seq, rec, fault)
            else:  # accepted in an earlier boot, never finished: never run it again
                self.violations.append(f"VEND {seq} sent again after it was interrupted by a reset")
            return
        if self._motor is not None:
            self._reply(seq, NAK, bytes([BUSY]))
            return
        if slot is None or slot not in self.stock:
            self._reply(seq, NAK, bytes([BAD_SLOT]))
            return
        fault = self._plans[0] if self._plans else Fault()
        if fault.nak_code is not None:  # refused: not remembered, nothing runs
            self._plans.popleft()
            self._reply(seq, NAK, bytes([fault.nak_code]), fault)
            return
        if fault.reboot_before_ack is not None:
            self._plans.popleft()
            self._reset(fault.reboot_before_ack)
            return
        if self._plans:
            self._plans.popleft()
        self.faults[seq] = fault
        turn = fault.turn_slot or slot
        rec = Record("running", boot=self.boot)
        self.ram[seq] = rec
        if self.memory > 0:  # recorded before the motor starts, kept across resets
            self.nvm[seq] = Record("started", boot=self.boot)
            self._trim()
        if fault.reboot_after_accept is not None:
            self._reset(fault.reboot_after_accept)
            return
        self._reply(seq, fault.ack_code or ACK, b"", fault, late=True, ack=True, vend_ack=True)
        if self.stock[turn] <= 0:
            self._decide(seq, turn, "empty", 0)
            return
        motor_ms = fault.motor_ms if fault.motor_ms is not None else self.rng.randint(100, 300)
        self._motor = seq
        self._motor_gen += 1
        gen = self._motor_gen
        self._later(motor_ms / 1000, lambda: self._motor_end(gen, seq, turn, motor_ms))
        if fault.reboot_mid_motor is not None:
            deaf = fault.reboot_mid_motor
            self._later(motor_ms / 2000, lambda: self._motor_gen == gen and self._reset(deaf))

    def _motor_end(self, gen: int, seq: int, turn: str, motor_ms: int) -> None:
        if gen != self._motor_gen or self._motor != seq:
            return  # reset meanwhile: the motor stopped, nothing fell
        self._motor = None
        self._decide(seq, turn, self.faults[seq].outcome, motor_ms)

    def _decide(self, seq: int, turn: str, outcome: str, motor_ms: int) -> None:
        if outcome == "ok":
            self.stock[turn] -= 1
            self.dropped[seq] += 1
        self.turned[seq] = turn
        fault = self.faults[seq]
        rec = Record("done", turn, OUTCOMES[fault.report or outcome], motor_ms, self.boot, self._current(outcome, fault))
        self.ram[seq] = rec
        if self.memory > 0:
            self.nvm[seq] = dataclasses.replace(rec)
            self._trim()
        if fault.reboot_after_drop is not None:
            self._reset(fault.reboot_after_drop)
            return
        if fault.forget:  # a board fault: no reset, yet it no longer knows the seq
            self.ram.pop(seq, None)
            self.nvm.pop(seq, None)
            return
        if not fault.silent_done:
            self._send_done(seq, rec, fault, truncate=fault.truncate)

    def _current(self, outcome: str, fault: Fault) -> tuple[int, int] | None:
        """What the shunt measured for this vend (0, 0 when the motor did not turn), if reported at all."""
        if not self.report_current:
            return None
        if outcome == "empty":
            return 0, 0
        if fault.current is not None:
            return fault.current
        mean = self.amp_rng.randint(150, 400)
        return mean, mean + self.amp_rng.randint(0, mean // 2)

    def _send_done(self, seq: int, rec: Record, fault: Fault, truncate: bool = False) -> None:
        code = rec.outcome if fault.done_code is None else fault.done_code
        slot = slot_bytes(rec.slot) if fault.done_slot is None else fault.done_slot
        payload = slot + bytes([code]) + rec.motor_ms.to_bytes(2, "big") + current_bytes(rec.current)
        self._reply(seq, VEND_DONE, payload, fault, truncate=truncate)

    def _trim(self) -> None:
        while len(self.nvm) > self.memory:
            self.nvm.popitem(last=False)

    # ---- sending ------------------------------------------------------------------------------------

    def _reply(
        self,
        seq: int,
        code: int,
        payload: bytes = b"",
        fault: Fault | None = None,
        *,
        late: bool = False,
        ack: bool = False,
        truncate: bool = False,
        vend_ack: bool = False,
    ) -> None:
        fault = fault or Fault()
        if code == ACK and fault.drop_acks > 0:
            fault.drop_acks -= 1
            return
        boot = fault.ack_boot if (code == ACK and fault.ack_boot is not None) else self.boot
        frame = encode(seq, boot, code, payload)
        if ack and fault.truncate:
            truncate = True
        delay = fault.late_s if late else 0.0
        if code == ACK and fault.ack_late_s:
            delay = max(delay, fault.ack_late_s)
        pre = b""
        if fault.replay and self.sent:
            pre += b"".join(self.sent[-4:])
        if fault.wrong_seq:
            older = max(1, seq - 1) if seq < 0x80000000 else seq - 1
            pre += encode(older, self.boot, code, payload) + encode(
                seq ^ 0x00ABC000, self.boot, code, payload
            )
        if fault.noise:
            pre += self._noise()
        self.sent.append(frame)
        if truncate:
            frame = frame[: self.rng.randint(2, len(frame) - 1)]
        post = self._noise() if fault.noise else b""
        on_sent = None
        if vend_ack and code == ACK and not truncate:  # the controller may now know this boot took the seq
            seen, boot_now = self.acked_in_boot, self.boot

            def on_sent() -> None:
                seen.setdefault(seq, boot_now)

        for _ in range(2 if fault.dup else 1):
            self._write(pre + frame + post, delay, fault.split, on_sent)

    def _noise(self) -> bytes:
        n = self.rng.randint(3, 24)
        return bytes(SOF if self.rng.random() < 0.15 else self.rng.randrange(256) for _ in range(n))

    def _announce(self) -> None:
        """After a reset: one unsolicited DOOR_STATE (seq 0) so the controller learns the boot id."""
        self._write(encode(0, self.boot, DOOR_STATE_REPLY, b"\x01\x01"))

    def _new_boot(self) -> int:
        return self.rng.randrange(1, 1 << 32)

    def _reset(self, deaf_s: float) -> None:
        """Brown-out: the motor stops, RAM and pending output are lost, deaf for ``deaf_s``, new boot id."""
        if self.memory_after_reset is not None:  # e.g. its memory chip failed, or new firmware came up
            self.memory, self.memory_after_reset = self.memory_after_reset, None
        self._motor = None
        self._motor_gen += 1
        self._out.clear()
        self._on_sent.clear()
        self._tail = 0.0
        self._events.clear()
        self.ram.clear()
        self.doors.clear()
        self._inbuf.clear()
        if self.memory == 0:
            self.nvm.clear()
        self.deaf_until = time.monotonic() + deaf_s
        self.reboots += 1

        def wake() -> None:
            self.boot = self._new_boot()
            self._announce()

        self._later(deaf_s, wake)

"""The adversarial board itself follows docs/protocols/vend-board.md when it is told not to misbehave:
driven here over its pty with its own codec (no daemon), so the daemon cases test the daemon, not a
board bug. Also: the board notices a controller that re-sends a VEND after an ACK and a reset."""

from __future__ import annotations

import os
import pathlib
import termios
import time
import tty
from collections.abc import Iterator

import pytest

from tests.adversarial import board as b
from tests.adversarial.board import AdversarialBoard, Fault


class Wire:
    """The controller's end of the pty, blocking with a deadline."""

    def __init__(self, link: str) -> None:
        self.fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd, termios.TCSANOW)  # not TCSAFLUSH: the boot announcement may be waiting
        os.set_blocking(self.fd, False)
        self.buf = b""

    def send(self, seq: int, boot: int, code: int, payload: bytes = b"") -> None:
        os.write(self.fd, b.encode(seq, boot, code, payload))

    def frames(self, within_s: float, until_seq: int | None = None) -> list[b.Frame]:
        """Frames read for ``within_s`` (or until one with ``until_seq`` arrives)."""
        out: list[b.Frame] = []
        end = time.monotonic() + within_s
        while time.monotonic() < end and not (until_seq is not None and any(f.seq == until_seq for f in out)):
            try:
                self.buf += os.read(self.fd, 4096)
            except BlockingIOError:
                time.sleep(0.01)
            while self.buf:
                used, frame = b.decode(self.buf)
                if used == 0:
                    break
                self.buf = self.buf[used:]
                if frame is not None:
                    out.append(frame)
        return out

    def ask(self, seq: int, boot: int, code: int, payload: bytes = b"", within_s: float = 0.5) -> b.Frame:
        self.send(seq, boot, code, payload)
        for f in self.frames(within_s, until_seq=seq):
            if f.seq == seq:
                return f
        raise AssertionError(f"no reply to seq {seq}")


@pytest.fixture
def rig(tmp_path: pathlib.Path) -> Iterator[tuple[AdversarialBoard, Wire]]:
    board = AdversarialBoard(str(tmp_path / "tty"), {"A1": 3, "A2": 0}, memory=8, seed=7)
    board.start()
    wire = Wire(board.link)
    try:
        yield board, wire
    finally:
        os.close(wire.fd)
        board.stop()


def hello(wire: Wire) -> tuple[int, int]:
    f = wire.ask(0x80000001, 0, b.HELLO, b"\x02")
    assert f.code == b.HELLO_REPLY and f.payload[0] == 2 and f.boot != 0
    return f.boot, int.from_bytes(f.payload[1:3], "big")


def result(wire: Wire, seq: int, target: int) -> tuple[int, int, str | None]:
    f = wire.ask(seq, 0, b.VEND_RESULT, target.to_bytes(4, "big"))
    assert f.code == b.VEND_RESULT_REPLY and int.from_bytes(f.payload[:4], "big") == target
    return f.payload[4], f.payload[5], b.slot_str(f.payload[6:8])


def test_boot_announcement_hello_and_a_vend(rig: tuple[AdversarialBoard, Wire]) -> None:
    board, wire = rig
    announce = wire.frames(0.2)
    assert [(f.seq, f.code) for f in announce] == [(0, b.DOOR_STATE_REPLY)]
    boot, memory = hello(wire)
    assert boot == announce[0].boot and memory == 8
    wire.send(5, boot, b.VEND, b.slot_bytes("A1"))
    got = wire.frames(0.6)
    assert [(f.seq, f.code) for f in got] == [(5, b.ACK), (5, b.VEND_DONE)]
    assert got[1].payload[:3] == b.slot_bytes("A1") + b"\x00"
    assert board.snapshot()[0]["A1"] == 2 and board.snapshot()[1] == {5: 1}
    assert result(wire, 0x80000002, 5) == (b.ST_DONE, 0, "A1")
    assert result(wire, 0x80000003, 99) == (b.ST_UNKNOWN, b.NO_OUTCOME, None)


def test_a_known_seq_never_runs_twice_and_busy_stale_bad_slot_empty(
    rig: tuple[AdversarialBoard, Wire],
) -> None:
    board, wire = rig
    boot, _ = hello(wire)
    board.plan(Fault(motor_ms=400))
    wire.send(5, boot, b.VEND, b.slot_bytes("A1"))
    assert wire.ask(5, boot, b.VEND, b.slot_bytes("A1")).code == b.ACK  # still running: ACK again
    nak = wire.ask(6, boot, b.VEND, b.slot_bytes("A1"))
    assert (nak.code, nak.payload) == (b.NAK, bytes([b.BUSY]))
    time.sleep(0.5)
    wire.frames(0.1)
    again = wire.ask(5, boot, b.VEND, b.slot_bytes("A1"))  # finished: the stored VEND_DONE at once
    assert again.code == b.VEND_DONE and board.snapshot()[1] == {5: 1}
    stale = wire.ask(7, boot ^ 1, b.VEND, b.slot_bytes("A1"))
    assert (stale.code, stale.payload, stale.boot) == (b.NAK, bytes([b.STALE_BOOT]), boot)
    assert wire.ask(8, boot, b.VEND, b.slot_bytes("Q1")).payload == bytes([b.BAD_SLOT])
    wire.send(9, boot, b.VEND, b.slot_bytes("A2"))
    empty = [f for f in wire.frames(0.3) if f.code == b.VEND_DONE]
    assert empty and empty[0].payload == b.slot_bytes("A2") + b"\x02\x00\x00" + b.current_bytes((0, 0))
    assert wire.ask(10, boot, 0x80).payload == bytes([b.BAD_FRAME])  # a response code sent to the board


@pytest.mark.parametrize("memory", [8, 0])
def test_memory_across_a_reset(tmp_path: pathlib.Path, memory: int) -> None:
    board = AdversarialBoard(str(tmp_path / "tty"), {"A1": 3}, memory=memory, seed=3)
    board.start()
    wire = Wire(board.link)
    try:
        boot, _ = hello(wire)
        wire.send(1, boot, b.VEND, b.slot_bytes("A1"))
        wire.frames(0.5)  # done
        board.plan(Fault(motor_ms=1000, reboot_mid_motor=0.2))
        wire.send(2, boot, b.VEND, b.slot_bytes("A1"))
        wire.frames(0.9)  # ACK, then the reset half way, deaf 0.2 s, the new boot's announcement
        new, _ = hello(wire)
        assert new != boot and board.reboots == 1
        if memory:
            assert result(wire, 0x80000005, 1) == (b.ST_DONE, 0, "A1")
            assert result(wire, 0x80000006, 2) == (b.ST_INTERRUPTED, b.NO_OUTCOME, None)
        else:
            assert result(wire, 0x80000005, 1)[0] == b.ST_UNKNOWN
            assert result(wire, 0x80000006, 2)[0] == b.ST_UNKNOWN
        assert board.snapshot()[1] == {1: 1}  # the interrupted motor dropped nothing
        assert board.violations == []
        wire.send(2, new, b.VEND, b.slot_bytes("A1"))  # a controller re-sending an ACKed VEND after a reset
        wire.frames(0.3)
        assert board.violations and "sent again after boot" in board.violations[0]
    finally:
        os.close(wire.fd)
        board.stop()

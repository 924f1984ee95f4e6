"""SIGKILL of the daemon in the middle of a card sale: the reader and the board (simulators in this
process) live on, as real ones do; the restarted daemon (wired with [payment] method = "mdb") closes
the payment by itself from its ledger and the board's memory, and ledger, reader and dispensed items
agree."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys

import pytest

from hw_sim.mdb_reader import MdbReaderThread, SimMdbReader
from hw_sim.vend_board import SimVendBoard, run_in_thread
from hw_sim.world import load_demo_planogram
from tests.support.rigs.vend import write_config
from tests.support.waits import wait_until

pytestmark = pytest.mark.timeout(90)
ROOT = pathlib.Path(__file__).resolve().parents[2]
SPIRAL = {s["slot_id"]: s["capacity"] for s in load_demo_planogram()["slots"] if s.get("shelf") is None}


class Child:
    def __init__(self, cfg: pathlib.Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mdb_child", str(cfg)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.read() == {"ready": True}

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"child died (rc={self.proc.poll()})"
        return json.loads(line)

    def ask(self, line: str) -> dict:
        self.send(line)
        return self.read()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def quit(self) -> None:
        self.send("quit")
        self.proc.wait(20)


@pytest.fixture
def world(tmp_path):
    board = run_in_thread(SimVendBoard(dict(SPIRAL), speed=1.0), link_path=str(tmp_path / "ttyVEND"))
    reader = MdbReaderThread(SimMdbReader(), str(tmp_path / "ttyMDB"))
    reader.start()
    extra = (
        f'[payment]\nmethod = "mdb"\nport = "{reader.link_path}"\ncard_wait_s = 5\napproval_timeout_s = 3\n'
    )
    cfg = write_config(tmp_path, board_port=board.url, extra=extra)
    first = Child(cfg)
    yield tmp_path, cfg, board, reader, first
    if first.proc.poll() is None:
        first.kill()
    reader.stop()
    board.stop()


def ledger(tmp_path: pathlib.Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(tmp_path / "data" / "ledger.sqlite3")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def agree(tmp_path, board, sim: SimMdbReader) -> tuple[int, int]:
    """Ledger, reader and board tell one story: completed paid vends == captures == items dropped."""
    completed = ledger(tmp_path, "SELECT COUNT(*) FROM orders WHERE kind='vend' AND status='completed'")[0][0]
    captured = ledger(tmp_path, "SELECT COUNT(*) FROM payment_sessions WHERE state='captured'")[0][0]
    open_ = ledger(
        tmp_path,
        "SELECT COUNT(*) FROM payment_sessions WHERE state IN "
        "('requested','approved','capturing','refunding')",
    )[0][0]
    assert open_ == 0 and sim.books.open == 0
    assert completed == board.sim.total_dispensed == captured == len(sim.books.captured)
    return completed, len(sim.books.refunded)


CLOSED = {"open": 0, "unsettled": 0, "vend_unreconciled": 0}


def start_selling(child, reader) -> dict:
    child.ask("restock")
    reader.call(reader.sim.tap)
    return child.ask("authorize A1")


def payment_state(tmp_path, payment_id: str) -> str:
    return ledger(tmp_path, f"SELECT state FROM payment_sessions WHERE payment_id='{payment_id}'")[0][0]


def test_kill_after_approval_before_the_vend_refunds_on_restart(world):
    tmp_path, cfg, board, reader, child = world
    auth = start_selling(child, reader)
    assert payment_state(tmp_path, auth["payment_id"]) == "approved"
    child.kill()  # approved, recorded, and no VEND has left for the board
    again = Child(cfg)
    assert again.ask("wait_closed") == CLOSED  # the daemon's own payment loop did it
    assert payment_state(tmp_path, auth["payment_id"]) == "refunded"
    assert reader.sim.books.refunded == [(101, 180)] and not reader.sim.books.captured
    assert agree(tmp_path, board, reader.sim) == (0, 1)
    assert reader.sim.state.value == "enabled"  # session completed and the reader set up again
    again.quit()


def test_kill_while_the_motor_runs_captures_once_the_board_confirms_the_drop(world):
    tmp_path, cfg, board, reader, child = world
    child.ask("restock")
    reader.call(reader.sim.tap)
    child.send("sell A1")  # the whole card sale, as a customer makes it
    wait_until(lambda: board.call(lambda: board.sim.vend_frames_received) > 0, 10, step_s=0.01,
               what="the VEND frame at the board")
    child.kill()  # approved and recorded, the VEND has left, the motor (1.2 s) still runs
    assert board.sim.total_dispensed == 0 and len(reader.sim.books.approved) == 1
    again = Child(cfg)
    assert again.ask("wait_closed") == CLOSED  # the vend journal is settled from the board, then the payment
    assert ledger(tmp_path, "SELECT state FROM payment_sessions") == [("captured",)]
    assert agree(tmp_path, board, reader.sim) == (1, 0)
    again.quit()


def test_kill_after_the_drop_before_the_capture_captures_on_restart(world):
    tmp_path, cfg, board, reader, child = world
    auth = start_selling(child, reader)
    assert child.ask(f"vend A1 {auth['ref']}") == {"status": "completed"}
    child.kill()  # dropped and recorded; VEND SUCCESS never sent
    assert not reader.sim.books.captured
    again = Child(cfg)
    assert again.ask("wait_closed") == CLOSED  # the daemon's own payment loop did it
    assert payment_state(tmp_path, auth["payment_id"]) == "captured"
    assert agree(tmp_path, board, reader.sim) == (1, 0)
    again.quit()


def test_kill_after_a_jam_refunds_on_restart(world):
    tmp_path, cfg, board, reader, child = world
    board.call(board.sim.jam, "A1")
    auth = start_selling(child, reader)
    assert child.ask(f"vend A1 {auth['ref']}") == {"status": "failed"}
    child.kill()
    again = Child(cfg)
    assert again.ask("wait_closed") == CLOSED  # the daemon's own payment loop did it
    assert payment_state(tmp_path, auth["payment_id"]) == "refunded"
    assert agree(tmp_path, board, reader.sim) == (0, 1)
    again.quit()

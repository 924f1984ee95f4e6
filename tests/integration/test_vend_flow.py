"""Classic vend flow against the simulated board over a real pty and a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from edge.core.errors import SaleRefused
from edge.ledger import repo
from hw_sim.vend_board import SimVendBoard, run_in_thread
from tests.support.rigs.vend import start_rig, write_config
from tests.support.waits import wait_for, wait_until


@pytest.fixture
async def rig(tmp_path):
    r = await start_rig(str(tmp_path), speed=200.0)
    yield r
    await r.stop()


async def orders(rig, status=None):
    rows = await rig.daemon.db.fetchall(
        "SELECT o.*, l.slot_id FROM orders o JOIN order_lines l USING(order_id) ORDER BY o.seq")
    return [dict(r) for r in rows if status is None or r["status"] == status]


async def test_hundred_vends_ledger_stock_and_sim_agree(rig):
    machine = rig.daemon.machine
    slots = sorted(rig.sim.stock)
    for i in range(100):
        await machine.sell(slots[i % len(slots)], f"card:{i}")
    done = await orders(rig, "completed")
    assert len(done) == 100 == rig.sim.total_dispensed
    stock = await repo.stock(rig.daemon.db)
    for slot in slots:
        assert stock[slot].count == rig.sim.stock[slot]
        assert sum(1 for o in done if o["slot_id"] == slot) == rig.sim.dispensed[slot]
    assert await rig.daemon.db.integrity_ok()


@pytest.mark.parametrize("fault, reason", [("jam", "jam"), ("no_drop", "drop_not_detected"),
                                           ("overcurrent", "motor_overcurrent")])
async def test_mechanical_fault_fails_order_with_refund(rig, fault, reason):
    getattr(rig.sim, fault)("A1")
    order = await rig.daemon.machine.sell("A1", "card:x")
    assert order["status"] == "failed" and order["refund_due"] and order["reason"] == reason
    assert rig.sim.total_dispensed == 0
    assert (await repo.stock(rig.daemon.db))["A1"].count == 8


async def test_empty_slot_fails_and_corrects_stock(rig):
    rig.sim.stock["B2"] = 0
    order = await rig.daemon.machine.sell("B2", "card:x")
    assert order["status"] == "failed" and order["reason"] == "empty" and order["refund_due"]
    assert (await repo.stock(rig.daemon.db))["B2"].count == 0
    with pytest.raises(SaleRefused) as refused:
        await rig.daemon.machine.sell("B2")
    assert refused.value.reason == "sold_out"


async def test_slot_disabled_after_n_jams_with_alarm(rig):
    rig.sim.jam("C3", times=3)
    for _ in range(3):
        await rig.daemon.machine.sell("C3", "card:x")
    with pytest.raises(SaleRefused) as refused:
        await rig.daemon.machine.sell("C3", "card:x")
    assert refused.value.reason == "slot_disabled"
    alarms = {a["alarm_key"] for a in await repo.active_alarms(rig.daemon.db)}
    assert "slot_disabled:C3" in alarms
    await rig.daemon.machine.restock("C3", None, actor="tech")
    assert (await rig.daemon.machine.sell("C3", "card:y"))["status"] == "completed"


@pytest.mark.parametrize("fault", ["garble", "silence"])
async def test_line_faults_retry_same_seq_never_double_dispense(rig, fault):
    for i in range(10):
        getattr(rig.sim, fault)(1)
        order = await rig.daemon.machine.sell("D1" if i < 5 else "D2", f"card:{i}")
        assert order["status"] == "completed"
    assert rig.sim.total_dispensed == 10
    c = rig.daemon.board.counters
    assert c["retries"] + c["crc_errors"] >= 1  # the fault really hit the line
    assert rig.sim.counters["vends"] == 10


async def test_unplug_alarms_refuses_then_recovers(rig):
    machine = rig.daemon.machine
    await rig.sim.unplug()

    async def offline_alarms() -> list[str]:
        return [a["alarm_key"] for a in await repo.active_alarms(rig.daemon.db) if a["kind"] == "device_offline"]

    async def alarmed() -> bool:
        return "device_offline:vend_board" in await offline_alarms()
    await wait_for(alarmed, 5.0, what="a device_offline alarm after unplug")
    with pytest.raises(SaleRefused) as refused:
        await machine.sell("A2")
    assert refused.value.reason == "board_offline"
    await rig.sim.replug()
    await rig.daemon.board.wait_connected(5.0)
    assert (await machine.sell("A2", "card:z"))["status"] == "completed"

    async def cleared() -> bool:
        return not await offline_alarms()
    await wait_for(cleared, 5.0, what="the device_offline alarm to clear")


def _daemon(cfg):
    return subprocess.Popen([sys.executable, "-m", "tests.support.run_daemon", str(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def _ask(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def _journal_state(db_path):
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        return [r[0] for r in con.execute("SELECT state FROM vend_journal")]
    finally:
        con.close()


@pytest.mark.parametrize("kill_at", ["after_send", "before_send"])
def test_sigkill_between_journal_and_result_is_reconciled(tmp_path, planogram_doc, kill_at):
    """A real SIGKILL with the journal row written: after restart the board is asked, nothing is re-sent."""
    sim = SimVendBoard({"A1": 8}, motor_ms=1500, speed=1.0)
    handle = run_in_thread(sim, link_path=str(tmp_path / "ttyVEND"))
    try:
        cfg = write_config(tmp_path, board_port=handle.url)
        db_path = str(tmp_path / "data" / "ledger.sqlite3")
        env_kill = {"before_send": "vend.after_journal"}.get(kill_at)
        proc = _daemon(cfg) if not env_kill else subprocess.Popen(
            [sys.executable, "-m", "tests.support.run_daemon", str(cfg)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "VENDEDGE_CRASH_AT": env_kill})
        assert json.loads(proc.stdout.readline())["ready"]
        assert _ask(proc, "restock A1") == {"A1": 8}
        proc.stdin.write("sell A1\n")
        proc.stdin.flush()
        if kill_at == "after_send":  # wait for the frame to reach the board, then pull the plug mid-motor
            wait_until(lambda: handle.call(lambda: sim.vend_frames_received) > 0, 10, step_s=0.01,
                       what="the VEND frame at the board")
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # the journal says how far it got: 'sent' (committed with the order, before the frame is written;
        # the frame may or may not have left) or 'acked' when the board's ACK was journaled before the kill
        expected = [["sent"], ["acked"]] if kill_at == "after_send" else [["sent"]]
        assert _journal_state(db_path) in expected
        if kill_at == "after_send":  # the motor (1.5 s) finishes while the daemon is dead
            wait_until(lambda: handle.call(lambda: sim.total_dispensed) == 1, 10, what="the item to drop")
        proc = _daemon(cfg)
        assert json.loads(proc.stdout.readline())["ready"]
        assert _ask(proc, "wait_reconciled") == {"unreconciled": 0}
        proc.stdin.close()
        proc.wait(10)
        import sqlite3

        con = sqlite3.connect(db_path)
        status, reason, refund = con.execute("SELECT status, reason, refund_due FROM orders").fetchone()
        count = con.execute("SELECT count FROM stock WHERE slot_id='A1'").fetchone()[0]
        con.close()
        dispensed = handle.call(lambda: sim.total_dispensed)
        if kill_at == "after_send":
            assert (status, dispensed, count) == ("completed", 1, 7)
        else:
            assert (status, reason, refund, dispensed) == ("failed", "not_sent", 1, 0)
        assert handle.call(lambda: sim.counters["vends"]) == dispensed  # nothing re-sent
    finally:
        handle.stop()


def test_bad_config_exits_nonzero_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[machine]\nid = "vm"\n[vend_board]\nport = "/dev/null"\nretries = 99\n')
    out = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "vend_board.retries" in out.stderr and "99" in out.stderr


async def test_restock_waits_while_a_vend_outcome_is_unknown(rig):
    """Restocking over a vend whose outcome is unknown would count that item twice once it settles."""
    await rig.sim.unplug()
    # the board is gone before the open journal row appears, so nothing can settle it meanwhile
    await wait_for(lambda: not rig.daemon.board.connected, 5.0, what="the daemon to lose the board")
    rig.daemon.machine.vend.unreconciled = 0  # as if the board dropped mid-vend: force a journal row open
    async with rig.daemon.db.tx() as tx:
        await tx.execute("INSERT INTO orders(order_id, kind, status, total_amount, currency, created_at, "
                         "updated_at, seq) VALUES ('o-x','vend','pending',180,'EUR','t','t',1)")
        await tx.execute("INSERT INTO vend_journal(order_id, slot_id, board_seq, state, created_at, updated_at) "
                         "VALUES ('o-x','A1',999,'unknown','t','t')")
    with pytest.raises(SaleRefused) as refused:
        await rig.daemon.machine.restock("A1", None, actor="tech")
    assert refused.value.reason == "reconciling"
    assert (await rig.daemon.machine.restock("B1", None, actor="tech")) == {"B1": 8}  # other slots are fine
    await rig.sim.replug()

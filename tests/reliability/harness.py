"""Reliability harness: a simulated board and a reference cloud in threads, the real daemon in a
subprocess, and the invariants every restart must satisfy. Used by tests/reliability and
bench/powercut.py.

The invariants (`check_invariants`), read from the ledger file, the simulator and the cloud:
- `PRAGMA integrity_check` is ok; no vend journal entry or order is left unsettled;
- simulator dispensed == ledger completed vend lines, per slot;
- every motor run on the board belongs to exactly one journal entry; no order has two journal
  entries or two final records (no order charged twice);
- ledger stock == start − dispensed + restocked, per slot, and equals the simulator's stock;
- the door is locked;
- with sync on: nothing left unacked or parked, and the cloud holds every outbox record exactly once.
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hw_sim.rigs.config import MACHINE_ID, spiral_stock, write_config
from hw_sim.threaded import LoopThread
from hw_sim.vend_board import SimThread, SimVendBoard, run_in_thread

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "reliability-admin-token"
SECRET = "5e" * 32  # the machine secret, hex (what secrets.toml holds)
SPIRAL = spiral_stock()
SOURCE_DIRS = ("edge", "sync", "drivers")


def called_points() -> dict[str, str]:
    """Crash points some module calls today (`crash_point("name")`): name → calling module."""
    found: dict[str, str] = {}
    pattern = re.compile(r"crash_point\(\s*[\"']([a-z_.]+)[\"']")
    for top in SOURCE_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name != "crashpoints.py":
                for name in pattern.findall(path.read_text(encoding="utf-8")):
                    found.setdefault(name, ".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def reached_points() -> set[str]:
    """Called points whose module the daemon runs (the composition root imports it, directly or via
    the ledger/services it always wires): these a workload can reach in the daemon subprocess."""
    root = (ROOT / "edge" / "daemon.py").read_text(encoding="utf-8")
    always = ("edge.ledger.", "edge.services.vend", "edge.services.cloud")
    return {name for name, module in called_points().items()
            if module.startswith(always) or module in root}


class CloudThread(LoopThread):
    """The reference cloud (`sync.refcloud.serve`) on 127.0.0.1 in its own thread and loop."""

    name = "refcloud"

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.port = 0
        self._runner: Any = None
        super().__init__()

    def start(self, timeout_s: float = 10.0) -> CloudThread:  # type: ignore[override]
        super().start(timeout_s)
        self.register(MACHINE_ID, bytes.fromhex(SECRET))
        return self

    async def _serve(self) -> None:
        from sync.refcloud import serve

        self._runner = await serve("127.0.0.1", 0, self.db_path, TOKEN, shutdown_timeout=0.5)
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One admin API call (Bearer token); returns (status, parsed JSON)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def register(self, machine_id: str, secret: bytes) -> None:
        status, _ = self.admin("POST", "/admin/machines", {"machine_id": machine_id, "secret_hex": secret.hex()})
        assert status == 201, status

    def record_ids(self, machine_id: str = MACHINE_ID) -> list[str]:
        return list(self.admin("GET", f"/admin/machines/{machine_id}/record_ids")[1]["record_ids"])



class DaemonProc:
    """`python -m tests.support.run_daemon CONFIG` with a reader thread, so no read blocks forever."""

    def __init__(self, cfg: pathlib.Path, *, crash_at: str | None = None, log_path: pathlib.Path,
                 env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        env.pop("VENDEDGE_CRASH_AT", None)
        if crash_at:
            env["VENDEDGE_CRASH_AT"] = crash_at
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.run_daemon", str(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, cwd=ROOT, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, name="daemon-stdout", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def read(self, timeout_s: float = 30.0) -> dict[str, Any] | None:
        """The next answer, or None when the process ended (crash point, kill, exit)."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty as exc:
            raise TimeoutError(f"daemon gave no answer in {timeout_s}s") from exc
        return None if line is None else json.loads(line)

    def ready(self, timeout_s: float = 30.0) -> bool:
        first = self.read(timeout_s)
        return bool(first and first.get("ready"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: the next read says so

    def ask(self, line: str, timeout_s: float = 30.0) -> dict[str, Any] | None:
        self.send(line)
        return self.read(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout_s: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def quit(self, timeout_s: float = 15.0) -> int:
        self.send("quit")
        return self.wait(timeout_s)


@dataclass
class Rig:
    """Board simulator (thread), optional cloud (thread), config and the harness's own bookkeeping."""

    root: pathlib.Path
    sim: SimVendBoard
    board: SimThread
    cfg: pathlib.Path
    cloud: CloudThread | None = None
    start_stock: dict[str, int] = field(default_factory=dict)
    restocked: Counter[str] = field(default_factory=Counter)
    daemon: DaemonProc | None = None

    @property
    def db_path(self) -> pathlib.Path:
        return self.root / "data" / "ledger.sqlite3"

    def start_daemon(self, crash_at: str | None = None, *, wait_ready: bool = True,
                     env: dict[str, str] | None = None) -> DaemonProc:
        self.daemon = DaemonProc(self.cfg, crash_at=crash_at, log_path=self.root / "daemon.log", env=env)
        if wait_ready and not self.daemon.ready():
            raise AssertionError(f"daemon did not start:\n{self.log_tail()}")
        return self.daemon

    def restart(self) -> DaemonProc:
        """Start again without any crash point, and wait until earlier vends are reconciled."""
        d = self.start_daemon()
        assert d.ask("wait_reconciled") == {"unreconciled": 0}, self.log_tail()
        return d

    def fill(self, slot: str) -> None:
        """The technician fills the spiral (physically), then confirms on the machine."""
        cap = SPIRAL[slot]
        before = self.board.call(lambda: self.sim.stock[slot])
        self.board.call(lambda: self.sim.stock.__setitem__(slot, cap))
        self.restocked[slot] += cap - before

    def restock(self, slot: str) -> dict[str, Any] | None:
        self.fill(slot)
        assert self.daemon is not None
        return self.daemon.ask(f"restock {slot}")

    def planogram_doc(self) -> dict[str, Any]:
        """The catalog+planogram document the daemon was seeded with (a copy to edit)."""
        doc: dict[str, Any] = json.loads((self.root / "planogram.json").read_text())
        return doc

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.root, lines)

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.proc.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        self.board.stop()
        if self.cloud is not None:
            self.cloud.stop()


def make_rig(root: pathlib.Path, *, sync: bool = False, motor_ms: int = 400, speed: float = 20.0,
             seed: int = 1, sync_extra: str = "") -> Rig:
    """Every spiral slot physically empty; the daemon seeds the demo planogram on first start."""
    root.mkdir(parents=True, exist_ok=True)
    sim = SimVendBoard(dict.fromkeys(SPIRAL, 0), motor_ms=motor_ms, speed=speed, seed=seed)
    board = run_in_thread(sim, link_path=str(root / "ttyVEND"))
    cloud = CloudThread(str(root / "cloud.sqlite3")).start() if sync else None
    extra, secrets_file = "", ""
    if cloud is not None:
        secrets = root / "secrets.toml"
        secrets.write_text(f'machine_secret = "{SECRET}"\n')
        secrets.chmod(0o600)
        secrets_file = str(secrets)
        extra = f'\n[sync]\nenabled = true\nurl = "{cloud.url}"\npoll_wait_s = 1\n{sync_extra}\n'
    cfg = write_config(root, board_port=board.url, extra=extra, secrets_file=secrets_file)
    return Rig(root, sim, board, cfg, cloud, start_stock=dict.fromkeys(SPIRAL, 0))


def _ledger(path: pathlib.Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        q = con.execute
        return {
            "integrity": q("PRAGMA integrity_check").fetchone()[0],
            "open_journal": q("SELECT COUNT(*) FROM vend_journal WHERE state != 'done'").fetchone()[0],
            "pending_orders": q("SELECT COUNT(*) FROM orders WHERE status='pending'").fetchone()[0],
            "completed": Counter(dict(q(
                "SELECT l.slot_id, SUM(l.qty) FROM order_lines l JOIN orders o USING(order_id) "
                "WHERE o.kind IN ('vend','test_vend') AND o.status='completed' GROUP BY l.slot_id"))),
            "motor_runs": q("SELECT COUNT(*) FROM vend_journal WHERE state='done' "
                            "AND outcome NOT IN ('not_sent','bad_slot')").fetchone()[0],
            "double_journal": q("SELECT COUNT(*) FROM (SELECT order_id FROM vend_journal GROUP BY order_id "
                                "HAVING COUNT(*) > 1)").fetchone()[0],
            "unpaid_refunds": q("SELECT COUNT(*) FROM orders WHERE status='failed' AND total_amount > 0 "
                                "AND refund_due = 0").fetchone()[0],
            "stock": dict(q("SELECT slot_id, count FROM stock")),
            "outbox": [r[0] for r in q("SELECT record_id FROM outbox")],
            "unacked": q("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0],
        }
    finally:
        con.close()


def check_invariants(rig: Rig, *, compacted: int = 0) -> list[str]:
    """Every violated invariant as a sentence (empty list: all hold). Call with the daemon quiet.
    `compacted`: acked outbox records the ledger has since deleted (the cloud still holds them)."""
    led = _ledger(rig.db_path)
    sim = rig.board.call(lambda: {"dispensed": dict(rig.sim.dispensed), "stock": dict(rig.sim.stock),
                                  "vends": rig.sim.counters["vends"], "locked": rig.sim.door_locked})
    bad: list[str] = []
    if led["integrity"] != "ok":
        bad.append(f"integrity_check: {led['integrity']}")
    if led["open_journal"] or led["pending_orders"]:
        bad.append(f"unsettled: {led['open_journal']} journal entries, {led['pending_orders']} orders")
    for slot in SPIRAL:
        done, disp = led["completed"].get(slot, 0), sim["dispensed"].get(slot, 0)
        if done != disp:
            bad.append(f"{slot}: sim dispensed {disp} but ledger completed {done}")
        expect = rig.start_stock[slot] - disp + rig.restocked[slot]
        if led["stock"].get(slot) != expect or sim["stock"].get(slot) != expect:
            bad.append(f"{slot}: stock ledger {led['stock'].get(slot)} sim {sim['stock'].get(slot)}, "
                       f"expected {expect} (start − dispensed + restocked)")
    if sim["vends"] != led["motor_runs"]:
        bad.append(f"board ran the motor {sim['vends']} times for {led['motor_runs']} journal entries")
    if led["double_journal"]:
        bad.append(f"{led['double_journal']} orders with more than one journal entry")
    if led["unpaid_refunds"]:
        bad.append(f"{led['unpaid_refunds']} failed paid orders without refund_due")
    if not sim["locked"]:
        bad.append("door unlocked")
    if rig.cloud is not None:
        bad.extend(_cloud_violations(rig.cloud, led, compacted))
    return bad


def _cloud_violations(cloud: CloudThread, led: dict[str, Any], compacted: int) -> list[str]:
    bad = []
    ids = cloud.record_ids()
    if led["unacked"]:
        bad.append(f"{led['unacked']} outbox records not acked")
    if len(ids) != len(set(ids)):
        bad.append("the cloud stored a record twice")
    missing, extra = set(led["outbox"]) - set(ids), set(ids) - set(led["outbox"])
    if missing or len(extra) != compacted:
        bad.append(f"cloud vs outbox: {len(missing)} missing, {len(extra)} unknown")
    finals = Counter(i.rsplit("-", 1)[0] for i in ids if i.startswith("order-"))
    if any(n > 1 for n in finals.values()):
        bad.append("an order reached the cloud with two final states")
    return bad


def log_tail(root: pathlib.Path, lines: int = 30) -> str:
    """The end of a daemon subprocess's log (`root/daemon.log`), for assertion messages."""
    path = root / "daemon.log"
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

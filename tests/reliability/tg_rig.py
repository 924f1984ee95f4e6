"""Take-and-go simulators for the subprocess harness: the Modbus plant (door, scales, fridge) on a pty,
the shelf cameras over HTTP and the vend board on a pty, all in ONE background thread with its own
asyncio loop, next to a daemon subprocess (`tests.support.run_daemon`). The config is built exactly as
`tests.support.rigs.takeandgo.start_takeandgo_rig` builds it.

    sims = TakeAndGoSims(root).start()
    cfg = sims.write_config()
    sims.call(sims.plant.open_door)     # thread-safe: runs on the simulators' loop
"""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

from hw_sim.camera.render import ShelfRenderer
from hw_sim.camera.server import CameraServer
from hw_sim.modbus import SimModbusPlant
from hw_sim.rigs.config import plant_config, spiral_stock, write_config
from hw_sim.threaded import LoopThread
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram
from tests.reliability.harness import DaemonProc, log_tail
from tests.support.rigs.takeandgo import camera_config
from tests.support.waits import wait_until

TAKEANDGO = """
[takeandgo]
enabled = true
never_opened_s = 20
settle_s = 3.0
"""
FINAL = ("charged", "needs_review", "void")


class TakeAndGoSims(LoopThread):
    """World + Modbus plant + cameras + vend board served from one thread and loop."""

    name = "sim.takeandgo"

    def __init__(self, root: pathlib.Path, *, seed: int = 1) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        doc = load_demo_planogram()
        self.world = FridgeWorld(doc)
        self.plant = SimModbusPlant(self.world, speed=1.0, seed=seed, wire_timing=False)
        self.board = SimVendBoard(spiral_stock(doc), speed=50.0, seed=seed)
        self.renderers = {k: ShelfRenderer(self.world, k, seed=seed) for k in self.world.shelves()}
        self.cameras = CameraServer({f"shelf{k}": r for k, r in self.renderers.items()})
        self.modbus_link = self.board_link = ""
        super().__init__()

    def start(self, timeout_s: float = 10.0) -> TakeAndGoSims:  # type: ignore[override]
        super().start(timeout_s)
        return self

    async def _serve(self) -> None:
        self.modbus_link = await self.plant.serve_rtu(str(self.root / "ttyMODBUS"))
        self.board_link = await self.board.serve_pty(str(self.root / "ttyVEND"))
        await self.cameras.start()

    async def _close(self) -> None:
        await self.cameras.stop()
        await self.board.stop()
        await self.plant.close()

    def locked(self) -> bool:
        return bool(self.call(lambda: self.plant.io.locked))

    def lane_count(self, slot: str) -> int:
        return int(self.call(lambda: len(self.world.lanes[slot].items)))

    def write_config(self, extra: str = "") -> pathlib.Path:
        """The daemon config `start_takeandgo_rig` writes (fast Modbus polling, 0.3 s timeout)."""
        plant = plant_config(self.modbus_link, poll_s=0.05, timeout_s=0.3)
        return write_config(self.root, board_port=self.board_link,
                            extra=plant + TAKEANDGO + camera_config(self.renderers, self.cameras) + extra)


def session_state(db_path: pathlib.Path, session_id: str) -> str | None:
    """The session's state in the ledger file (None before the row is written)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT state FROM sessions WHERE session_id=?", (session_id,)).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return None
    finally:
        con.close()
    return str(row[0]) if row else None


def ledger_view(db_path: pathlib.Path, session_id: str, slot: str) -> dict[str, Any]:
    """What the ledger file says about one session: its orders and lines, the lane's stock, integrity."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        orders = [dict(zip(("order_id", "status", "total"), r, strict=True)) for r in con.execute(
            "SELECT order_id, status, total_amount FROM orders WHERE session_id=?", (session_id,))]
        lines = [dict(zip(("slot_id", "sku_id", "qty"), r, strict=True)) for r in con.execute(
            "SELECT l.slot_id, l.sku_id, l.qty FROM order_lines l JOIN orders o USING(order_id) "
            "WHERE o.session_id=?", (session_id,))]
        stock = con.execute("SELECT count FROM stock WHERE slot_id=?", (slot,)).fetchone()
        return {"orders": orders, "lines": lines, "stock": stock[0] if stock else None,
                "integrity": con.execute("PRAGMA integrity_check").fetchone()[0]}
    finally:
        con.close()


class TakeAndGoRig:
    """The simulators above plus a daemon subprocess on their config (restartable)."""

    def __init__(self, root: pathlib.Path, *, seed: int = 1) -> None:
        self.root = root
        self.sims = TakeAndGoSims(root, seed=seed).start()
        self.cfg = self.sims.write_config()
        self.daemon: DaemonProc | None = None

    @property
    def db_path(self) -> pathlib.Path:
        return self.root / "data" / "ledger.sqlite3"

    def start_daemon(self, crash_at: str | None = None) -> DaemonProc:
        self.daemon = DaemonProc(self.cfg, crash_at=crash_at, log_path=self.root / "daemon.log")
        if not self.daemon.ready():
            raise AssertionError(f"daemon did not start:\n{self.log_tail()}")
        return self.daemon

    def wait_final(self, session_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """Poll the daemon until the session is charged, needs_review or void; returns its row."""
        assert self.daemon is not None
        daemon = self.daemon
        last: dict[str, Any] = {}

        def final() -> bool:
            nonlocal last
            last = daemon.ask(f"session {session_id}") or {}
            return last.get("state") in FINAL
        try:
            wait_until(final, timeout_s, step_s=0.1, what=f"session {session_id} to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: last {last}\n{self.log_tail()}") from None
        return last

    def wait_opened(self, session_id: str, timeout_s: float = 10.0) -> None:
        """Until the daemon has seen the door open (the ledger's session row is `open`): the I/O module
        is polled, so a take before that would happen, for the daemon, with the door still closed."""
        wait_until(lambda: session_state(self.db_path, session_id) == "open", timeout_s,
                   what=f"the daemon to see the door open for {session_id}")

    def wait_unlocked(self, timeout_s: float = 15.0) -> None:
        wait_until(lambda: not self.sims.locked(), timeout_s, what="the door to unlock")

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.root, lines)

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.proc.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        self.sims.stop()

"""The daemon and the simulated board in the test's own loop (device and environment fault tests):
faster than a subprocess and lets a test move the injected clock or point sync at a fault proxy."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from edge.clock import SystemClock
from edge.config import Secrets, load_config
from edge.daemon import Daemon
from edge.ledger import repo
from edge.services.machine import Machine
from hw_sim.vend_board import SimVendBoard
from tests.reliability.harness import SECRET, SPIRAL
from tests.support.rigs.vend import write_config
from tests.support.waits import wait_for


@dataclass
class InprocRig:
    sim: SimVendBoard
    daemon: Daemon
    root: pathlib.Path

    @property
    def machine(self) -> Machine:
        assert self.daemon.machine is not None
        return self.daemon.machine

    async def alarms(self) -> set[str]:
        assert self.daemon.db is not None
        return {a["alarm_key"] for a in await repo.active_alarms(self.daemon.db)}

    async def wait_for(self, predicate: Any, timeout_s: float = 10.0, what: str = "") -> None:
        """Poll an async or plain predicate until true; fail naming `what`."""
        await wait_for(predicate, timeout_s, step_s=0.02, what=what)

    async def completed_by_slot(self) -> dict[str, int]:
        assert self.daemon.db is not None
        rows = await self.daemon.db.fetchall(
            "SELECT l.slot_id, COUNT(*) AS n FROM orders o JOIN order_lines l USING(order_id) "
            "WHERE o.status='completed' GROUP BY l.slot_id")
        return {r["slot_id"]: r["n"] for r in rows}

    async def stop(self) -> None:
        await self.daemon.stop()
        await self.sim.stop()


async def start_inproc(root: pathlib.Path, *, speed: float = 20.0, motor_ms: int = 1200,
                       sync_url: str | None = None, sync_extra: str = "", clock: SystemClock | None = None,
                       data_dir: pathlib.Path | None = None) -> InprocRig:
    """Board on a pty, daemon on the other end, every spiral slot filled (ledger and board agree)."""
    root.mkdir(parents=True, exist_ok=True)
    sim = SimVendBoard(dict(SPIRAL), motor_ms=motor_ms, speed=speed, seed=3)
    link = await sim.serve_pty(str(root / "ttyVEND"))
    extra = f'\n[sync]\nenabled = true\nurl = "{sync_url}"\npoll_wait_s = 1\nretry_max_s = 2\n{sync_extra}\n' if sync_url else ""
    cfg = write_config(root, board_port=link, extra=extra)
    if data_dir is not None:
        cfg.write_text(cfg.read_text().replace(f'data_dir = "{root / "data"}"', f'data_dir = "{data_dir}"'))
    daemon = Daemon(load_config(cfg), Secrets(machine_secret=SECRET), clock=clock)
    try:
        machine = await daemon.start()
        assert daemon.board is not None
        await daemon.board.wait_connected(5.0)
        for slot in SPIRAL:
            await machine.restock(slot, None, actor="test")
    except BaseException:
        await daemon.stop()
        await sim.stop()
        raise
    return InprocRig(sim, daemon, root)

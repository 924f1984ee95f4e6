"""The simulated vend board and the daemon in this process, on the demo config (hw_sim.rigs.config)."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from edge.config import load_config
from edge.daemon import Daemon
from hw_sim.rigs.config import MACHINE_ID, spiral_stock, write_config
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import load_demo_planogram

__all__ = ["MACHINE_ID", "DemoRig", "machine_slots", "start_rig", "write_config"]


@dataclass
class DemoRig:
    sim: SimVendBoard
    daemon: Daemon
    state_dir: pathlib.Path
    planogram: dict[str, Any]

    async def stop(self) -> None:
        await self.daemon.stop()
        await self.sim.stop()


async def start_rig(state_dir: str, *, speed: float = 20.0, seed: int = 1, fill: bool = True,
                    extra: str = "") -> DemoRig:
    """Simulated board on a pty, daemon on the other end, every spiral slot filled."""
    root = pathlib.Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    planogram = load_demo_planogram()
    spiral = spiral_stock(planogram)
    sim = SimVendBoard(dict(spiral), speed=speed, seed=seed)
    link = await sim.serve_pty(str(root / "ttyVEND"))
    daemon = Daemon(load_config(write_config(root, board_port=link, extra=extra)))
    machine = await daemon.start()
    assert daemon.board is not None
    await daemon.board.wait_connected(5.0)
    if fill:
        await machine.restock(None, None, actor="demo")
        for slot in [s for s in machine_slots(planogram) if s not in spiral]:
            await machine.restock(slot, 0, actor="demo")
    return DemoRig(sim, daemon, root, planogram)


def machine_slots(planogram: dict[str, Any]) -> list[str]:
    return [s["slot_id"] for s in planogram["slots"]]

"""The chilled machine: the simulated Modbus plant (fridge controller, weight shelves, door I/O) on an
RTU pty, the vend board on a pty, and the daemon on a clock that follows the simulator's clock, so
alarm delays and the food-safety allowance run in simulated time."""

from __future__ import annotations

import asyncio
import pathlib
from dataclasses import dataclass, field
from typing import Any

from edge.clock import ManualClock
from edge.config import load_config
from edge.daemon import Daemon
from edge.services.plant import Plant
from hw_sim.modbus import SimModbusPlant
from hw_sim.rigs.config import plant_config, spiral_stock, write_config
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram

START_WALL = 1_800_000_000.0  # 2027-01-15 08:00 UTC: any fixed origin keeps runs comparable
HOUR = 3600.0
__all__ = ["HOUR", "START_WALL", "FridgeRig", "PlantClock", "plant_config", "start_fridge_rig"]


class PlantClock(ManualClock):
    """A ManualClock that also follows the simulator's clock (speed x real time)."""

    def __init__(self, sim_clock: Any, start: float = START_WALL) -> None:
        super().__init__(start)
        self._sim = sim_clock

    def wall(self) -> float:
        return self._wall + float(self._sim.now())

    def monotonic(self) -> float:
        return self._mono + float(self._sim.now())


@dataclass
class FridgeRig:
    """Simulators + daemon + plant services, all on one simulated clock."""

    sim: SimModbusPlant
    board_sim: SimVendBoard
    daemon: Daemon
    plant: Plant
    clock: PlantClock
    world: FridgeWorld
    root: pathlib.Path
    notes: dict[str, Any] = field(default_factory=dict)

    def sim_now(self) -> float:
        return float(self.sim.clock.now())

    async def until(self, sim_t: float, *, step_s: float = 0.003) -> None:
        """Let real time pass until the simulator's clock reaches `sim_t` seconds (time is the subject)."""
        while self.sim_now() < sim_t:
            await asyncio.sleep(step_s)

    async def stop(self) -> None:
        await self.daemon.stop()  # stops the plant too (door locked first)
        await self.board_sim.stop()
        await self.sim.close()


async def start_fridge_rig(state_dir: str, *, speed: float = 2000.0, seed: int = 1, poll_s: float = 0.03,
                           wire_timing: bool = False, fill: bool = True,
                           restock_grace_s: float = 3600) -> FridgeRig:
    """Start the Modbus plant (RTU on a pty), the vend board (pty), the daemon and its plant services."""
    root = pathlib.Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    doc = load_demo_planogram()
    world = FridgeWorld(doc)
    sim = SimModbusPlant(world, speed=speed, seed=seed, wire_timing=wire_timing)
    link = await sim.serve_rtu(str(root / "ttyMODBUS"))
    spiral = spiral_stock(doc)
    board_sim = SimVendBoard(dict(spiral), speed=speed, seed=seed)
    board_link = await board_sim.serve_pty(str(root / "ttyVEND"))
    clock = PlantClock(sim.clock)
    extra = plant_config(link, poll_s=poll_s, restock_grace_s=restock_grace_s)
    cfg = load_config(write_config(root, board_port=board_link, extra=extra))
    daemon = Daemon(cfg, clock=clock, time_scale=speed)  # the daemon starts the plant (door, guards)
    machine = await daemon.start()
    plant = daemon.plant
    assert plant is not None and daemon.board is not None
    await daemon.board.wait_connected(5.0)
    if fill:
        await machine.restock(None, None, actor="demo")
    return FridgeRig(sim, board_sim, daemon, plant, clock, world, root)

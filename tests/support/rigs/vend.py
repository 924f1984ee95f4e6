"""A demo config on disk, and the simulated vend board + the daemon in this process."""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

from edge.config import load_config
from edge.daemon import Daemon
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import load_demo_planogram

MACHINE_ID = "demo-0001"  # the id every config from `write_config` carries


@dataclass
class DemoRig:
    sim: SimVendBoard
    daemon: Daemon
    state_dir: pathlib.Path
    planogram: dict[str, Any]

    async def stop(self) -> None:
        await self.daemon.stop()
        await self.sim.stop()


def write_config(state_dir: pathlib.Path, *, board_port: str, extra: str = "",
                 web_port: int | None = None, secrets_file: str = "") -> pathlib.Path:
    """`state_dir/vendedge.toml` for the demo planogram (written next to it unless already there)."""
    planogram = state_dir / "planogram.json"
    if not planogram.exists():
        planogram.write_text(json.dumps(load_demo_planogram()))
    cfg = state_dir / "vendedge.toml"
    cfg.write_text(f"""
[machine]
id = "{MACHINE_ID}"
data_dir = "{state_dir / 'data'}"
planogram_file = "{planogram}"
secrets_file = "{secrets_file}"

[logging]
level = "warning"

[vend_board]
port = "{board_port}"
reply_timeout_s = 0.3
retries = 3
vend_timeout_s = 10
jam_disable_after = 3

[web]
enabled = {'true' if web_port is not None else 'false'}
port = {web_port or 0}
{extra}
""")
    return cfg


async def start_rig(state_dir: str, *, speed: float = 20.0, seed: int = 1, fill: bool = True,
                    extra: str = "") -> DemoRig:
    """Simulated board on a pty, daemon on the other end, every spiral slot filled."""
    root = pathlib.Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    planogram = load_demo_planogram()
    spiral = {s["slot_id"]: s["capacity"] for s in planogram["slots"] if s.get("shelf") is None}
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

"""Take-and-go rig: Modbus plant (door, scales, fridge) + rendered shelf cameras + the daemon, and a
scripted customer that opens the door, acts out a seeded scenario and closes it."""

from __future__ import annotations

import asyncio
import json
import pathlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from edge.config import load_config, load_secrets
from edge.daemon import Daemon
from edge.services.takeandgo import TakeAndGoService
from hw_sim.camera.render import Art, ShelfRenderer
from hw_sim.camera.server import CameraServer
from hw_sim.customers import Scenario, Truth, apply, generate
from hw_sim.modbus import SimModbusPlant
from hw_sim.rigs.config import plant_config, spiral_stock, write_config
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram
from tests.support.waits import poll, wait_for

__all__ = ["TakeAndGoRig", "camera_config", "door_seen_open", "shop", "start_takeandgo_rig", "wait_for"]
FINAL = ("charged", "needs_review", "void")


@dataclass
class TakeAndGoRig:
    world: FridgeWorld
    plant_sim: SimModbusPlant
    board_sim: SimVendBoard
    cameras: CameraServer
    daemon: Daemon
    root: pathlib.Path
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> TakeAndGoService:
        assert self.daemon.machine is not None
        svc = self.daemon.machine.services.takeandgo
        assert svc is not None
        return svc

    async def stop(self) -> None:
        await self.daemon.stop()
        await self.cameras.stop()
        await self.board_sim.stop()
        await self.plant_sim.close()


def camera_config(renderers: dict[int, ShelfRenderer], server: CameraServer) -> str:
    """[cameras.*] sections whose cell grid matches what the renderer draws."""
    out = []
    for shelf, r in renderers.items():
        cells = r.layout()
        x0 = min(c["x"] for c in cells)
        y0 = min(c["y"] for c in cells)
        out.append(f"""
[cameras.shelf{shelf}]
source = "{server.url(f'shelf{shelf}')}"
shelf = {shelf}
x0 = {x0}
y0 = {y0}
cell_w = {cells[0]['w']}
cell_h = {cells[0]['h']}
rows = {r.rows}
timeout_s = 2.0
""")
    return "".join(out)


async def start_takeandgo_rig(state_dir: str, *, seed: int = 1, extra: str = "", model_dir: str = "",
                              fusion: bool = True, web_port: int | None = None,
                              secrets_file: str = "", planogram: dict[str, Any] | None = None,
                              art: dict[str, Art] | None = None) -> TakeAndGoRig:
    """The rig with the demo planogram, or `planogram` (a catalog+planogram document) whose products
    the cameras draw from `art` where given (see ShelfRenderer)."""
    root = pathlib.Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    doc = planogram or load_demo_planogram()
    if planogram is not None:
        (root / "planogram.json").write_text(json.dumps(planogram))  # write_config keeps an existing one
    world = FridgeWorld(doc)
    plant_sim = SimModbusPlant(world, speed=1.0, seed=seed, wire_timing=False)
    link = await plant_sim.serve_rtu(str(root / "ttyMODBUS"))
    spiral = spiral_stock(doc)
    board_sim = SimVendBoard(dict(spiral), speed=50.0, seed=seed)
    board_link = await board_sim.serve_pty(str(root / "ttyVEND"))
    renderers = {k: ShelfRenderer(world, k, seed=seed, art=art) for k in world.shelves()}
    cameras = CameraServer({f"shelf{k}": r for k, r in renderers.items()})
    await cameras.start()
    tg = f"""
[takeandgo]
enabled = true
never_opened_s = 20
settle_s = 3.0
fusion = {'true' if fusion else 'false'}
{f'model_dir = "{model_dir}"' if model_dir else ''}
"""
    cfg = write_config(root, board_port=board_link, web_port=web_port, secrets_file=secrets_file,
                       extra=plant_config(link, poll_s=0.05, timeout_s=0.3)
                       + tg + camera_config(renderers, cameras) + extra)
    config = load_config(cfg)
    daemon = Daemon(config, load_secrets(secrets_file) if secrets_file else None)
    machine = await daemon.start()
    assert daemon.board is not None
    await daemon.board.wait_connected(5.0)
    await machine.restock(None, None, actor="demo")  # the world starts full, so does the ledger
    return TakeAndGoRig(world, plant_sim, board_sim, cameras, daemon, root)


async def door_seen_open(rig: TakeAndGoRig, session_id: str, timeout_s: float = 10.0) -> None:
    """Until the session has seen the door open: the I/O module is polled, so a take before that would
    happen, for the daemon, with the door still closed."""
    svc = rig.service
    await wait_for(lambda: svc.session is not None and svc.session.session_id == session_id
                   and svc.session.opened_at is not None, timeout_s, what=f"session {session_id} to see the door open")


async def shop(rig: TakeAndGoRig, rng: random.Random, *, kind: str | None = None,
               session_id: str | None = None, limit: int | None = None,
               actions: list[Any] | None = None, linger_s: float = 0.0,
               conditions: dict[str, Any] | None = None) -> tuple[dict[str, Any], Truth | None]:
    """One customer: authorize, wait for the unlock, open, act, close; returns (session row, truth)."""
    svc = rig.service
    sid = session_id or uuid.uuid4().hex[:12]
    await svc.open_session(sid, f"cust-{sid[:4]}", limit)
    await wait_for(lambda: not rig.plant_sim.io.locked, 10.0, what="the door to unlock")
    assert rig.plant_sim.open_door(), "door did not open although unlocked"
    await door_seen_open(rig, sid)
    if actions is not None:
        truth: Truth | None = apply(rig.world, Scenario(kind or "scripted", actions))
    else:
        truth = apply(rig.world, generate(rig.world, rng, kind=kind))
    if conditions:  # light and hands as the cameras will see them at close
        for k in rig.world.shelves():
            rig.cameras.set_conditions(f"shelf{k}", **conditions)
    await asyncio.sleep(linger_s)  # the scenario: a real shopper looks at the item before closing the door
    rig.plant_sim.close_door()
    db = rig.daemon.db
    assert db is not None
    row = await poll(lambda: db.fetchone("SELECT * FROM sessions WHERE session_id=?", (sid,)),
                     lambda r: r is not None and r["state"] in FINAL, 30.0, what=f"session {sid} to end")
    return dict(row), truth

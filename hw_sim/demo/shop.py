"""The interactive demo's machine: Modbus plant (door, scales, fridge) + rendered shelf cameras + the
scanner camera filming a customer's phone, and the daemon configured for take-and-go, offline tokens
and the cloud link. Shoppers are authorized only through public paths: a cloud `open_session`
command, or a signed offline token shown as a QR code to the scanner camera.
"""

from __future__ import annotations

import asyncio
import pathlib
import random
import uuid
from dataclasses import dataclass
from typing import Any

from hw_sim.camera.render import ShelfRenderer
from hw_sim.camera.server import CameraServer
from hw_sim.customers import apply, generate
from hw_sim.modbus import SimModbusPlant
from hw_sim.phone import PhoneScreen
from hw_sim.rigs.api import poll
from hw_sim.rigs.cloud import CloudProcess
from hw_sim.rigs.config import MACHINE_ID, plant_config
from hw_sim.rigs.machine import ProcessRig, start_machine
from hw_sim.world import FridgeWorld, load_demo_planogram

FINAL = ("charged", "needs_review", "void")


def camera_config(renderers: dict[int, ShelfRenderer], server: CameraServer) -> str:
    """[cameras.*] sections whose cell grid matches what the renderer draws."""
    out = []
    for shelf, r in renderers.items():
        cells = r.layout()
        out.append(f"""
[cameras.shelf{shelf}]
source = "{server.url(f'shelf{shelf}')}"
shelf = {shelf}
x0 = {min(c["x"] for c in cells)}
y0 = {min(c["y"] for c in cells)}
cell_w = {cells[0]['w']}
cell_h = {cells[0]['h']}
rows = {r.rows}
timeout_s = 2.0
""")
    return "".join(out)


TAKEANDGO = """
[takeandgo]
enabled = true
never_opened_s = 20
settle_s = 3.0
fusion = true
"""


def offline_auth_config(key: dict[str, Any], scanner: CameraServer) -> str:
    """[offline_auth] with the cloud's token key and the scanner camera that films the phone."""
    return f"""
[offline_auth]
enabled = true
public_keys = {{ "{key['kid']}" = "{key['public_key']}" }}
scanner_source = "{scanner.url('scanner')}"
scan_interval_s = 0.25
"""


@dataclass
class Shop:
    """Everything the shoppers touch: the world, its simulators, the machine and the cloud."""

    world: FridgeWorld
    plant: SimModbusPlant
    cameras: CameraServer
    scanner: CameraServer
    phone: PhoneScreen
    rig: ProcessRig
    cloud: CloudProcess


async def open_shop(root: pathlib.Path, cloud: CloudProcess, *, seed: int, web_port: int, sync: str,
                    log_path: pathlib.Path, secret_hex: str) -> Shop:
    """Start the simulators in this process and the daemon for them (its logs to `log_path`)."""
    world = FridgeWorld(load_demo_planogram())
    plant = SimModbusPlant(world, speed=1.0, seed=seed, wire_timing=False)
    renderers = {k: ShelfRenderer(world, k, seed=seed) for k in world.shelves()}
    cameras = CameraServer({f"shelf{k}": r for k, r in renderers.items()})
    phone = PhoneScreen()
    scanner = CameraServer({"scanner": phone})
    closers = [plant.close, cameras.stop, scanner.stop]
    try:
        link = await plant.serve_rtu(str(root / "ttyMODBUS"))
        await cameras.start()
        await scanner.start()
        key = await cloud.admin("GET", "/admin/token-key")
        extra = (plant_config(link, poll_s=0.05, timeout_s=0.3) + TAKEANDGO + camera_config(renderers, cameras)
                 + sync + offline_auth_config(key, scanner))
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    rig = await start_machine(root, speed=50.0, seed=seed, extra=extra, web_port=web_port, log_path=log_path,
                              log_level="info", fill="all", secrets_extra={"machine_secret": secret_hex},
                              closers=closers)
    return Shop(world, plant, cameras, scanner, phone, rig, cloud)


async def wait_unlocked(shop: Shop, timeout_s: float = 15.0) -> None:
    async def unlocked() -> bool:
        return not shop.plant.io.locked

    await poll(unlocked, timeout_s, every_s=0.02, what="door unlocked")


async def session_state(shop: Shop, sid: str, timeout_s: float = 30.0) -> str:
    """The session's final state, from the daemon's `session_finished` events."""
    found: dict[str, str] = {}

    async def finished() -> bool:
        page = await shop.rig.tech.get("/api/v1/events?kind=session_finished&per_page=20")
        for ev in page["events"]:
            data = ev.get("data") or {}
            if data.get("session_id") == sid and data.get("state") in FINAL:
                found["state"] = data["state"]
        return bool(found)

    await poll(finished, timeout_s, every_s=0.2, what=f"session {sid} finished")
    return found["state"]


async def cloud_shopper(shop: Shop, rng: random.Random, linger_s: float = 1.5) -> str:
    """A customer authorized by the cloud (`open_session` command): open, act a seeded scenario, close."""
    sid = uuid.uuid4().hex[:12]
    await shop.cloud.command(MACHINE_ID, "open_session", {"session_id": sid, "customer_ref": f"cust-{sid[:4]}"})
    await wait_unlocked(shop)
    assert shop.plant.open_door(), "door did not open although unlocked"
    await asyncio.sleep(0.3)  # the customer reaches in (the I/O module is polled: the daemon sees the door open)
    truth = apply(shop.world, generate(shop.world, rng))
    await asyncio.sleep(linger_s)  # a real shopper looks at the item before closing the door
    shop.plant.close_door()
    state = await session_state(shop, sid)
    return f"take-and-go {sid}: {state} (took {dict(truth.removed)})"


async def token_shopper(shop: Shop, rng: random.Random) -> str:
    """A customer whose app shows a signed QR code: the machine checks it offline and opens."""
    doc = await shop.cloud.admin("POST", f"/admin/machines/{MACHINE_ID}/tokens",
                                 {"customer_ref": f"app-{rng.randint(1, 999)}", "limit": 1500})
    sid = f"offline-{doc['claims']['nonce']}"  # the daemon names the session after the token's nonce
    shop.phone.show(doc["token"])
    try:
        await wait_unlocked(shop)
    finally:
        shop.phone.clear()
    assert shop.plant.open_door(), "door did not open although unlocked"
    slot = rng.choice([s for s, lane in shop.world.lanes.items() if lane.items])
    shop.world.take(slot)
    await asyncio.sleep(1.5)
    shop.plant.close_door()
    state = await session_state(shop, sid)
    return f"offline-token session {sid}: {state} (took one from {slot})"

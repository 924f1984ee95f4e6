"""`vendedge demo` (interactive): every part running locally, with simulated customers, until Ctrl-C.

Simulated vend board + Modbus plant (fridge, scales, door) + shelf cameras + the scanner camera in
this process; the daemon, the reference cloud it syncs with (and, with `--transport mqtt`, a local
Mosquitto) as subprocesses. Prints where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import random
import secrets
import signal
import sys

import aiohttp

from hw_sim.demo.shop import Shop, cloud_shopper, open_shop, token_shopper
from hw_sim.rigs.api import ApiError, SaleRefused
from hw_sim.rigs.cloud import CloudLink, start_cloud
from hw_sim.rigs.config import MACHINE_ID
from hw_sim.rigs.daemon import RigError
from hw_sim.world import load_demo_planogram


async def interactive(state_dir: str, *, web_port: int = 8080, seed: int = 1, keep_state: bool = True,
                      log_path: str = "", transport: str = "https") -> int:
    """Run until Ctrl-C (SIGINT) or SIGTERM. The daemon's and the simulators' logs go to `log_path`, so
    the banner stays readable on screen."""
    stop = asyncio.Event()  # Ctrl-C during start-up, too, ends in a clean stop rather than a traceback
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    root = pathlib.Path(state_dir)
    log = pathlib.Path(log_path or root / "demo.log")
    admin_token, secret_hex = secrets.token_hex(16), secrets.token_hex(32)
    link: CloudLink | None = None
    shop: Shop | None = None
    try:
        link = await start_cloud(root, admin_token, MACHINE_ID, secret_hex, load_demo_planogram(),
                                 mqtt=transport == "mqtt")
        shop = await open_shop(root, link.cloud, seed=seed, web_port=web_port, sync=link.sync_config(),
                               log_path=log, secret_hex=secret_hex)
        password = shop.rig.passwords["tech"]
        broker_url = link.broker.url if link.broker else ""
        print(banner(shop, password, admin_token, log, keep_state, broker_url), flush=True)
        reminder = f"  (diagnostics page {shop.rig.base_url}/  user tech  password {password})"
        await customers(shop, stop, seed, reminder)
    except RigError as exc:
        if not stop.is_set():  # a part that failed to start; after Ctrl-C the parts stop on their own
            print(f"vendedge demo: {exc}", file=sys.stderr)
            return 1
    finally:
        if shop is not None:
            await shop.rig.stop()  # the daemon locks the door while the plant simulator is still there
        if link is not None:
            await link.stop()
    print("demo stopped", file=sys.stderr)
    return 0


def banner(shop: Shop, password: str, admin_token: str, log_path: pathlib.Path, keep_state: bool,
           broker_url: str = "") -> str:
    kept = "kept after exit" if keep_state else "removed on exit; keep it with --state DIR"
    link = f"\n  cloud link        MQTT 5 via Mosquitto at {broker_url} (docs/protocols/mqtt.md)" if broker_url else ""
    return f"""
vendedge demo is running — machine {MACHINE_ID} (state in {shop.rig.root}, {kept})
  diagnostics page  {shop.rig.base_url}/
                    log in as user: tech   password: {password}
                    (a random password made for this run only; it dies with the demo's state)
  reference cloud   {shop.cloud.url}/fleet
                    the browser asks for a login: any user name, password = the admin token
                    admin token: {admin_token}
  shelf cameras     {shop.cameras.url('shelf0', 'mjpg')} (shelf0..shelf3)
  scanner camera    {shop.scanner.url('scanner', 'mjpg')} (customers' phones show signed QR codes here)
  logs              {log_path}  (JSON lines: tail -f it in another terminal){link}
  another account   vendedge user add NAME --config {shop.rig.cfg}
Simulated customers shop every few seconds (below). Ctrl-C to stop.
"""


async def customers(shop: Shop, stop: asyncio.Event, seed: int, reminder: str = "") -> None:
    """A shopper every few seconds: spiral purchases at the kiosk, take-and-go sessions opened by the
    cloud, offline-token customers at the scanner; the technician restocks what sells out."""
    rng = random.Random(seed)
    spiral = sorted(shop.rig.board.stock)
    n = 0
    while not stop.is_set():
        n += 1
        if reminder and n % 10 == 0:  # the banner has scrolled away by now
            print(reminder, flush=True)
        try:
            if n % 4 == 0:
                print(f"  {await token_shopper(shop, rng)}", flush=True)
            elif n % 3:
                slot = rng.choice(spiral)
                order = await shop.rig.kiosk.sell(slot, f"card:demo-{n}")
                print(f"  classic vend {slot}: {order['status']}", flush=True)
            else:
                print(f"  {await cloud_shopper(shop, rng)}", flush=True)
        except SaleRefused as exc:
            print(f"  sale refused: {exc.error}", flush=True)
            if exc.error in ("sold_out", "slot_disabled"):
                await restock(shop)
        except (TimeoutError, AssertionError, ApiError, RigError, aiohttp.ClientError) as exc:
            if stop.is_set():
                break
            print(f"  customer gave up: {exc}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=rng.uniform(4, 9))


async def restock(shop: Shop) -> None:
    """The technician fills every spiral and lane, then confirms on the machine."""
    filled = await shop.rig.tech.restock(None)
    shop.rig.board.stock.update({s: filled[s] for s in shop.rig.board.stock})
    for slot in shop.world.lanes:
        shop.world.restock(slot)

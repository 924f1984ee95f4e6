"""`vendedge demo` (interactive): every part running locally, with simulated customers, until Ctrl-C.

Simulated vend board + Modbus plant (fridge, scales, door) + shelf cameras, the daemon, the
reference cloud it syncs with, and the diagnostics page. Prints where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import sys
import tempfile
from typing import Any

import aiohttp

from edge.core.errors import SaleRefused
from edge.demo.takeandgo import TakeAndGoRig, shop, start_takeandgo_rig, wait_for
from edge.ledger.users import UserStore
from edge.web.app import bound_port
from hw_sim.camera.server import CameraServer
from hw_sim.phone import PhoneScreen
from hw_sim.world import load_demo_planogram
from sync.refcloud.server import serve as serve_cloud

ADMIN = "/admin/machines"


async def start_cloud(state_dir: str, admin_token: str, secret_hex: str, machine_id: str,
                      mqtt: Any = None) -> tuple[Any, int]:
    """The reference cloud on a free loopback port, with this machine registered and its planogram
    (and, with `mqtt` settings, its MQTT workers on that broker)."""
    runner = await serve_cloud("127.0.0.1", 0, os.path.join(state_dir, "refcloud.sqlite3"), admin_token,
                               mqtt=mqtt)
    port = int(runner.addresses[0][1])
    headers = {"Authorization": f"Bearer {admin_token}"}
    base = f"http://127.0.0.1:{port}{ADMIN}"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(base, json={"machine_id": machine_id, "secret_hex": secret_hex}) as r:
            r.raise_for_status()
        async with http.put(f"{base}/{machine_id}/config", json=load_demo_planogram()) as r:
            r.raise_for_status()
    return runner, port


def sync_config(state_dir: str, port: int, secret_hex: str) -> str:
    secrets_file = os.path.join(state_dir, "secrets.toml")
    with open(os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f'machine_secret = "{secret_hex}"\n')
    return f"""
[sync]
enabled = true
url = "http://127.0.0.1:{port}"
poll_wait_s = 5
"""


async def offline_authorization(state_dir: str, cloud_port: int, admin_token: str,
                                phone: PhoneScreen, scanner: CameraServer) -> str:
    """[offline_auth] with the cloud's token key and the scanner camera that films the phone."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin_token}"}) as http:
        async with http.get(f"http://127.0.0.1:{cloud_port}/admin/token-key") as r:
            key = await r.json()
    return f"""
[offline_auth]
enabled = true
public_keys = {{ "{key['kid']}" = "{key['public_key']}" }}
scanner_source = "{scanner.url('scanner')}"
scan_interval_s = 0.25
"""


async def token_shopper(rig: TakeAndGoRig, phone: PhoneScreen, cloud: tuple[int, str], rng: random.Random) -> str:
    """A customer whose app shows a signed QR code: the machine checks it offline and opens."""
    port, admin_token = cloud
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin_token}"}) as http:
        url = f"http://127.0.0.1:{port}{ADMIN}/demo-0001/tokens"
        async with http.post(url, json={"customer_ref": f"app-{rng.randint(1, 999)}", "limit": 1500}) as r:
            token = (await r.json())["token"]
    phone.show(token)
    try:
        await wait_for(lambda: not rig.plant_sim.io.locked, 10.0)
    finally:
        phone.clear()
    assert rig.plant_sim.open_door()
    slot = rng.choice([s for s, lane in rig.world.lanes.items() if lane.items])
    rig.world.take(slot)
    await asyncio.sleep(1.5)
    rig.plant_sim.close_door()
    svc = rig.service
    await wait_for(lambda: svc.session is not None and svc.session.final, 30.0)
    return f"offline-token session {svc.session.session_id}: {svc.session.state} (took one from {slot})"


async def customers(rig: TakeAndGoRig, stop: asyncio.Event, seed: int,
                    token_customer: Any = None, reminder: str = "") -> None:
    """A shopper every few seconds: spiral purchases and take-and-go sessions, with restocking."""
    rng = random.Random(seed)
    machine = rig.daemon.machine
    assert machine is not None
    spiral = sorted(rig.board_sim.stock)
    n = 0
    while not stop.is_set():
        n += 1
        if reminder and n % 10 == 0:  # the banner has scrolled away by now
            print(reminder, flush=True)
        try:
            if token_customer is not None and n % 4 == 0:
                print(f"  {await token_customer(rng)}", flush=True)
            elif n % 3:
                slot = rng.choice(spiral)
                order = await machine.sell(slot, f"card:demo-{n}")
                print(f"  classic vend {slot}: {order['status']}", flush=True)
            else:
                row, truth = await shop(rig, rng, linger_s=1.5)
                print(f"  take-and-go {row['session_id']}: {row['state']} (took {dict(truth.removed) if truth else {}})",
                      flush=True)
        except SaleRefused as exc:
            print(f"  sale refused: {exc.reason}", flush=True)
            if exc.reason in ("sold_out", "slot_disabled"):
                filled = await machine.restock(None, None, actor="demo-technician")
                rig.board_sim.stock.update({s: filled[s] for s in spiral})
                for slot in rig.world.lanes:
                    rig.world.restock(slot)
        except (TimeoutError, AssertionError) as exc:
            print(f"  customer gave up: {exc!r}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=rng.uniform(4, 9))


async def interactive(state_dir: str, *, web_port: int = 8080, seed: int = 1, keep_state: bool = True,
                      log_path: str = "", transport: str = "https") -> int:
    """Run until Ctrl-C. `run_demo` sends the logs to `log_path` so the banner stays readable on screen.
    `transport="mqtt"` syncs through a local Mosquitto (edge/demo/mqtt_broker.py)."""
    state_dir = state_dir or tempfile.mkdtemp(prefix="vendedge-demo-")
    return await _interactive(state_dir, web_port, seed, log_path or "(stderr)", keep_state, transport)


def banner(state_dir: str, port: int, password: str, cloud_port: int, admin_token: str, rig: TakeAndGoRig,
           scanner: CameraServer, log_path: str, keep_state: bool, broker_url: str = "") -> str:
    kept = "kept after exit" if keep_state else "removed on exit; keep it with --state DIR"
    link = f"\n  cloud link        MQTT 5 via Mosquitto at {broker_url} (docs/protocols/mqtt.md)" if broker_url else ""
    return f"""
vendedge demo is running — machine demo-0001 (state in {state_dir}, {kept})
  diagnostics page  http://127.0.0.1:{port}/
                    log in as user: tech   password: {password}
                    (a random password made for this run only; it dies with the demo's state)
  reference cloud   http://127.0.0.1:{cloud_port}/fleet
                    the browser asks for a login: any user name, password = the admin token
                    admin token: {admin_token}
  shelf cameras     {rig.cameras.url('shelf0', 'mjpg')} (shelf0..shelf3)
  scanner camera    {scanner.url('scanner', 'mjpg')} (customers' phones show signed QR codes here)
  logs              {log_path}  (JSON lines: tail -f it in another terminal){link}
  another account   vendedge user add NAME --config {os.path.join(state_dir, 'vendedge.toml')}
Simulated customers shop every few seconds (below). Ctrl-C to stop.
"""


async def _interactive(state_dir: str, web_port: int, seed: int, log_path: str, keep_state: bool,
                       transport: str = "https") -> int:
    stop = asyncio.Event()  # Ctrl-C during start-up, too, ends in a clean stop rather than a traceback
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    admin_token, secret_hex, machine_id = secrets.token_hex(16), secrets.token_hex(32), "demo-0001"
    broker, mqtt = None, None
    if transport == "mqtt":
        from edge.demo.mqtt_broker import start_broker

        broker, mqtt = start_broker(state_dir, machine_id, secret_hex)
    cloud, cloud_port = await start_cloud(state_dir, admin_token, secret_hex, machine_id, mqtt=mqtt)
    phone = PhoneScreen()
    scanner = CameraServer({"scanner": phone})
    await scanner.start()
    rig: TakeAndGoRig | None = None
    try:
        extra = sync_config(state_dir, cloud_port, secret_hex)
        if broker is not None:
            from edge.demo.mqtt_broker import sync_lines

            extra += sync_lines(broker.url)
        extra += await offline_authorization(state_dir, cloud_port, admin_token, phone, scanner)
        rig = await start_takeandgo_rig(state_dir, seed=seed, extra=extra, web_port=web_port,
                                        secrets_file=os.path.join(state_dir, "secrets.toml"))
        assert rig.daemon.db is not None
        password = secrets.token_urlsafe(12)
        await UserStore(rig.daemon.db).add("tech", "technician", password, actor="demo")
        port = bound_port(rig.daemon.web_runner)
        print(banner(state_dir, port, password, cloud_port, admin_token, rig, scanner, log_path, keep_state,
                     broker.url if broker else ""), flush=True)
        the_rig = rig
        await customers(rig, stop, seed,
                        lambda rng: token_shopper(the_rig, phone, (cloud_port, admin_token), rng),
                        reminder=f"  (diagnostics page http://127.0.0.1:{port}/  user tech  password {password})")
    finally:
        if rig is not None:
            await rig.stop()  # the daemon locks the door while the plant simulator is still there
        await scanner.stop()
        await cloud.cleanup()
        if broker is not None:
            broker.stop()
    print("demo stopped", file=sys.stderr)
    return 0

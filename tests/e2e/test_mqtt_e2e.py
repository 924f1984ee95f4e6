"""Issue 16: 1,000 sales through the real daemon (a subprocess) syncing over MQTT 5 via Debian's
Mosquitto (loopback, password + ACL files from `vendedge refcloud mqtt-acl`). The broker is
restarted twice while the machine sells offline — once cleanly (SIGTERM: it saves its retained
messages and sessions), once SIGKILLed (it loses them) — and each time the daemon is SIGKILLed in
the middle of draining its backlog. In the end the cloud holds exactly the ledger's 1,000 orders:
none missing, none twice, and its last stock level per slot equals the ledger's."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time

import pytest

from hw_sim.vend_board import SimVendBoard, run_in_thread
from tests.e2e.test_sync_e2e import _ledger, _sell
from tests.support.mqtt_rig import MqttRig, mqtt_rig, needs_mosquitto, until
from tests.support.rigs.vend import write_config
from tests.support.run_daemon import DaemonProcess, spiral_stock

MACHINE = "demo-0001"
SECRET = b"mqtt-e2e-machine-secret-0123456789"
SALES = 1_000
pytestmark = [needs_mosquitto, pytest.mark.timeout(180)]


def _config(state: pathlib.Path, board_port: str, broker_url: str) -> pathlib.Path:
    from hw_sim.world import load_demo_planogram  # noqa: PLC0415

    state.mkdir(parents=True, exist_ok=True)
    doc = load_demo_planogram()
    for slot in doc["slots"]:
        slot["capacity"] = 60
    (state / "planogram.json").write_text(json.dumps(doc))
    secrets = state / "secrets.toml"
    secrets.write_text(f'machine_secret = "{SECRET.hex()}"\n')
    secrets.chmod(0o600)
    return write_config(
        state,
        board_port=board_port,
        secrets_file=str(secrets),
        extra=f"""
[sync]
enabled = true
transport = "mqtt"
batch_max_records = 20
poll_wait_s = 1.0

[sync.mqtt]
url = "{broker_url}"
keepalive_s = 5
reconnect_max_s = 1.0
ack_timeout_s = 3
""",
    )


async def _orders(rig: MqttRig) -> int:
    return int((await rig.get(MACHINE, "orders"))["count"])


async def _restart_broker_and_kill_mid_drain(
    daemon: DaemonProcess, rig: MqttRig, *, kill_broker: bool
) -> int:
    """The machine sold while the broker was down: bring the broker back, wait until the cloud is
    visibly taking the backlog (20–80 % of the run), SIGKILL the daemon, restart it."""
    before = await _orders(rig)
    await rig.broker_start()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        n = await _orders(rig)
        if before < n and 0.2 * SALES <= n <= 0.8 * SALES:
            await daemon.kill()
            await daemon.start()
            return n
        if n > 0.8 * SALES:
            break
        await asyncio.sleep(0.005)
    pytest.fail(
        f"the drain never hit the kill window (cloud had {before}, now {await _orders(rig)}, kill_broker={kill_broker})"
    )


async def test_1000_sales_broker_restarted_twice_daemon_sigkilled_twice_cloud_holds_exactly_the_ledger(
    tmp_path: pathlib.Path,
) -> None:
    t0 = time.monotonic()
    async with mqtt_rig(tmp_path, {MACHINE: SECRET}, workers=2) as rig:
        state = tmp_path / "state"
        cfg = _config(state, str(tmp_path / "ttyVEND"), rig.broker.url)
        spiral = spiral_stock(state)
        sim = SimVendBoard(dict(spiral), motor_ms=1200, speed=600, seed=3)
        handle = run_in_thread(sim, link_path=str(tmp_path / "ttyVEND"))
        daemon = DaemonProcess(cfg, tmp_path / "daemon.log")
        slots = sorted(spiral)
        kills: list[int] = []
        try:
            await daemon.start()
            assert set((await daemon.ask("restock")).values()) == {60}
            await _sell(daemon, slots, 0, 150)
            await rig.broker_stop(kill=False)  # a clean broker restart: it saves sessions + retained
            await _sell(daemon, slots, 150, 450)
            kills.append(await _restart_broker_and_kill_mid_drain(daemon, rig, kill_broker=False))
            await _sell(daemon, slots, 450, 550)
            await rig.broker_stop(kill=True)  # a broker crash: what it had not saved is gone
            await _sell(daemon, slots, 550, SALES)
            kills.append(await _restart_broker_and_kill_mid_drain(daemon, rig, kill_broker=True))

            async def synced() -> bool:
                return (await daemon.ask("backlog"))["backlog"] == 0 and await _orders(rig) >= SALES

            assert await until(synced, 60, 0.1), (
                await daemon.ask("backlog"),
                await daemon.ask("sync_status"),
            )
            sync_status = await daemon.ask("sync_status")
            assert await daemon.stop() == 0
            dispensed = handle.call(lambda: sim.total_dispensed)
        finally:
            await daemon.kill()
            handle.stop()

        completed, stock, not_completed = _ledger(state / "data" / "ledger.sqlite3")
        assert len(completed) == SALES and not_completed == 0 and dispensed == SALES
        record_ids = (await rig.get(MACHINE, "record_ids"))["record_ids"]
        cloud_ids = [r.removeprefix("order-").rsplit("-", 1)[0] for r in record_ids if r.startswith("order-")]
        assert len(cloud_ids) == len(set(cloud_ids)) == SALES  # none twice
        assert set(cloud_ids) == completed  # none missing, none foreign
        orders = await rig.get(MACHINE, "orders")
        assert orders["count"] == SALES and sum(v["qty"] for v in orders["by_sku"].values()) == SALES
        assert await rig.get(MACHINE, "stock") == stock  # the cloud's last level per slot is the ledger's
        assert all(0.2 * SALES <= k <= 0.8 * SALES for k in kills) and len(kills) == 2
        assert sync_status["transport"] == "mqtt" and sync_status["online"]

        async def said_goodbye() -> bool:  # the clean stop published "offline" itself (no Will)
            return 'class="link offline"' in await rig.fleet_page()

        assert await until(said_goodbye, 5)
    elapsed = time.monotonic() - t0
    print(
        f"\nmqtt e2e: {SALES} sales in {elapsed:.1f}s, kills at cloud order counts {kills}, cloud {rig.cloud.stats}"
    )
    assert elapsed < 120

"""hw_sim/rigs: the real daemon and reference cloud as subprocesses, driven only through the config
file, the CLI and the HTTP APIs (what `vendedge demo` is built on)."""

from __future__ import annotations

import pathlib
import random

import pytest

from hw_sim.demo.classic import classic_vend
from hw_sim.demo.shop import FINAL, cloud_shopper, open_shop, token_shopper
from hw_sim.rigs.api import ApiClient, ApiError, SaleRefused
from hw_sim.rigs.cloud import CloudProcess, mosquitto_binary, start_cloud
from hw_sim.rigs.config import MACHINE_ID, plant_config, write_config
from hw_sim.rigs.daemon import DaemonProcess, RigError, vendedge
from hw_sim.rigs.machine import start_machine
from hw_sim.world import load_demo_planogram

pytestmark = pytest.mark.timeout(90)


async def test_a_sale_through_the_kiosk_api_drops_an_item_and_sigterm_stops_cleanly(tmp_path):
    rig = await start_machine(tmp_path, seed=3)
    try:
        order = await rig.kiosk.sell("A1", "card:t-1")
        assert order["status"] == "completed" and order["lines"][0]["slot_id"] == "A1"
        assert rig.board.dispensed["A1"] == 1 and rig.board.stock["A1"] == 7
        with pytest.raises(ApiError) as forbidden:  # the kiosk account may sell, not restock
            await rig.kiosk.restock("A1")
        assert forbidden.value.status == 403
        await rig.tech.restock("C3", 0)
        with pytest.raises(SaleRefused) as refused:
            await rig.kiosk.sell("C3", "card:t-2")
        assert refused.value.error == "sold_out" and rig.board.dispensed["C3"] == 0
    finally:
        code = await rig.stop()
    assert code == 0, rig.daemon.log_tail()
    assert rig.board.door_locked
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


async def test_the_config_written_for_the_daemon_passes_check_config(tmp_path):
    cfg = write_config(tmp_path, board_port=str(tmp_path / "ttyVEND"), web_port=0,
                       extra=plant_config(str(tmp_path / "ttyMODBUS"), poll_s=0.05))
    out = await vendedge("check-config", "--config", str(cfg))
    assert f"machine {MACHINE_ID}" in out


async def test_a_daemon_that_cannot_start_is_reported_with_its_log_not_waited_for(tmp_path):
    cfg = write_config(tmp_path, board_port=str(tmp_path / "ttyVEND"), web_port=0,
                       extra="[vend_board]\nport = 'twice'\n")  # a duplicate table: the daemon exits 2
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log")
    with pytest.raises(RigError, match="daemon did not start") as exc:
        await daemon.start("http://127.0.0.1:9/healthz", timeout_s=60)
    assert "vend_board" in str(exc.value) or "vendedge.toml" in str(exc.value)
    assert daemon.proc is not None and daemon.proc.returncode == 2


async def test_the_reference_cloud_subprocess_registers_the_machine_and_stops(tmp_path: pathlib.Path):
    cloud = await CloudProcess(tmp_path, "t" * 32).start()
    try:
        await cloud.register(MACHINE_ID, "ab" * 32, load_demo_planogram())
        listed = await cloud.admin("GET", "/admin/machines")
        assert MACHINE_ID in str(listed)
        async with ApiClient(cloud.url) as anonymous:
            with pytest.raises(ApiError) as denied:
                await anonymous.get(f"/admin/machines/{MACHINE_ID}/orders")
        assert denied.value.status == 401
    finally:
        await cloud.stop()
    assert cloud.proc is not None and cloud.proc.returncode == 0


async def test_classic_vend_demo_settles_brownouts_by_count_and_agrees_with_the_board(tmp_path):
    summary = await classic_vend(str(tmp_path), customers=40, seed=1)
    assert summary["mismatches"] == 0 and summary["integrity_ok"], summary
    assert summary["orders_completed"] == summary["sim_dispensed"] > 0
    assert summary["board_resets"] > 0 and summary["needs_count"] >= 1  # seed 1 browns out mid-vend
    assert summary["pending"] == summary["needs_count_open"] == 0


async def test_take_and_go_shoppers_get_in_only_through_the_cloud_command_or_a_signed_qr_code(tmp_path):
    secret = "cd" * 32
    link = await start_cloud(tmp_path, "t" * 32, MACHINE_ID, secret, load_demo_planogram())
    cloud, shop = link.cloud, None
    try:
        shop = await open_shop(tmp_path, cloud, seed=1, web_port=0, sync=link.sync_config(),
                               log_path=tmp_path / "daemon.log", secret_hex=secret)
        assert shop.plant.io.locked and not shop.plant.open_door()  # nobody gets in uninvited
        rng = random.Random(1)
        by_command = await cloud_shopper(shop, rng, linger_s=0.5)
        by_token = await token_shopper(shop, rng)
        assert by_command.split(": ")[1].split(" ")[0] in FINAL, by_command  # let in, decided, recorded
        assert by_token.startswith("offline-token session offline-") and ": charged" in by_token, by_token
        commands = await cloud.admin("GET", f"/admin/machines/{MACHINE_ID}/commands")
        assert [(c["name"], c["result_status"]) for c in commands["commands"]] == [("open_session", "ok")]
        assert shop.plant.io.locked  # relocked after each customer
    finally:
        if shop is not None:
            await shop.rig.stop()
        await link.stop()


@pytest.mark.skipif(mosquitto_binary() is None, reason="needs mosquitto (apt-get install -y mosquitto)")
async def test_over_mqtt_the_cloud_command_reaches_the_daemon_through_the_local_broker(tmp_path):
    secret = "ef" * 32
    link = await start_cloud(tmp_path, "t" * 32, MACHINE_ID, secret, load_demo_planogram(), mqtt=True)
    shop = None
    try:
        assert link.broker is not None and "[sync.mqtt]" in link.sync_config()
        shop = await open_shop(tmp_path, link.cloud, seed=2, web_port=0, log_path=tmp_path / "daemon.log",
                               sync=link.sync_config(), secret_hex=secret)
        outcome = await cloud_shopper(shop, random.Random(2), linger_s=0.5)
        assert outcome.split(": ")[1].split(" ")[0] in FINAL, outcome
        assert '"transport": "mqtt"' in (tmp_path / "daemon.log").read_text()  # not the HTTPS long poll
    finally:
        if shop is not None:
            await shop.rig.stop()
        await link.stop()

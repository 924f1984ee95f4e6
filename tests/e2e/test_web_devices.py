"""The Devices page over real HTTP: the vend board's firmware from its handshake, the network as the
kernel reports it, the payment reader's state from a real MDB reader (simulated at the wire on a pty),
and "unknown" where a machine has no such device."""

from __future__ import annotations

import aiohttp
import pytest

from drivers.mdb import CashlessReader
from edge.config import Secrets, WebConfig
from edge.services import diagnostics
from edge.services.accounts import Accounts
from edge.services.payment_mdb import MdbPayment, MdbPaymentConfig
from edge.web.app import bound_port, start_web
from hw_sim.mdb_reader import SimMdbReader
from hw_sim.vend_board import FIRMWARE
from tests.support.rigs.vend import start_rig

PASSWORD = "correct horse battery"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def site(tmp_path):
    rig = await start_rig(str(tmp_path), speed=200.0)
    await Accounts(rig.daemon.machine.db).add("tech", "technician", PASSWORD)
    runner = await start_web(rig.daemon.machine, WebConfig(host="127.0.0.1", port=0), Secrets())
    try:
        yield rig, f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
        await rig.stop()


async def devices(base: str) -> tuple[dict, str]:
    async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        assert (await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})).status == 200
        api = await (await s.get("/api/v1/devices")).json()
        page = await s.get("/devices")
        assert page.status == 200
        return api["info"], await page.text()


async def test_board_firmware_network_and_no_payment_device(site):
    rig, base = site
    info, page = await devices(base)
    assert (
        info["board"]["firmware"] == FIRMWARE and f'id="firmware">{FIRMWARE}<' in page
    )  # what the board said
    assert info["board"]["protocol"] == "2"
    assert info["payment"]["state"] == "unknown" and 'id="payment-state">unknown<' in page
    names = {i["name"] for i in diagnostics.network_state()}
    assert {i["name"] for i in info["network"]["interfaces"]} == names
    assert info["network"]["cloud"] == "not configured" and 'id="last-contact">never<' in page


async def test_payment_reader_state_is_shown(site):
    rig, base = site
    sim = SimMdbReader()
    link = await sim.serve_pty(str(rig.state_dir / "ttyMDB"))
    reader = CashlessReader(link, poll_interval_s=0.02, reply_timeout_s=0.3)
    await reader.start()
    try:
        await reader.wait_connected(5)
        pay = MdbPayment(rig.daemon.db, reader, MdbPaymentConfig(card_wait_s=2, approval_timeout_s=1))
        await pay.recover()
        rig.daemon.machine.services.payment = pay
        info, page = await devices(base)
        assert info["payment"]["state"] == reader.state.value != "unknown"
        assert "connected=True" in info["payment"]["detail"]
        assert f'id="payment-state">{reader.state.value}<' in page
    finally:
        await reader.stop()
        await sim.stop()


async def test_create_app_without_a_web_config_uses_the_defaults(site):
    """`create_app` as tests and tools call it, with no [web] section: UTC and no extra Host names."""
    from edge.web.app import create_app
    from edge.web.keys import ALLOWED_HOSTS, QUERIES

    rig, _ = site
    app = create_app(rig.daemon.machine, Secrets())
    assert app[QUERIES].tz.key == "UTC" and app[ALLOWED_HOSTS] == frozenset()


async def test_unlock_window_bounds(site):
    """A restock may need minutes to start: the API takes 500..600000 ms and refuses the rest, and a
    window longer than this door's latch counts (a vend board's: 65535 ms) is refused, not cut short."""
    rig, base = site
    async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        login = await (await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})).json()
        headers = {"X-CSRF-Token": login["csrf"]}
        for bad in (499, 600_001, True, "9000", 1.5, 65_536):
            r = await s.post("/api/v1/devices/unlock", json={"ms": bad, "confirm": True}, headers=headers)
            assert r.status == 400, bad
            assert rig.sim.door_locked
        r = await s.post("/api/v1/devices/unlock", json={"ms": 65_535, "confirm": True}, headers=headers)
        assert r.status == 200, await r.text()
    assert not rig.sim.door_locked and rig.sim.open_door()

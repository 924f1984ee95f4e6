"""The technician sees the card reader's state and its last error on the Devices page (real HTTP, the
daemon wired with [payment] method = "mdb", the reader simulated at the adapter's wire on a pty)."""

from __future__ import annotations

import asyncio
import html

import aiohttp
import pytest

from edge.config import Secrets, WebConfig
from edge.ledger import repo
from edge.services.accounts import Accounts
from edge.web.app import bound_port, start_web
from hw_sim.mdb_reader import SimMdbReader
from tests.support.rigs.vend import start_rig

PASSWORD = "correct horse battery"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def site(tmp_path):
    reader = SimMdbReader(approve_delay_s=0.02)
    link = await reader.serve_pty(str(tmp_path / "ttyMDB"))
    extra = f'[payment]\nmethod = "mdb"\nport = "{link}"\ncard_wait_s = 2\napproval_timeout_s = 1\n'
    rig = await start_rig(str(tmp_path), speed=200.0, extra=extra)
    await Accounts(rig.daemon.machine.db).add("tech", "technician", PASSWORD)
    runner = await start_web(rig.daemon.machine, WebConfig(host="127.0.0.1", port=0), Secrets())
    try:
        yield rig, reader, f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
        await rig.stop()
        await reader.stop()


async def devices(base: str) -> tuple[dict, str]:
    async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        assert (await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})).status == 200
        api = await (await s.get("/api/v1/devices")).json()
        page = await s.get("/devices")
        assert page.status == 200
        return api, html.unescape(await page.text())


async def until(predicate, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_reader_state_last_error_and_counters_on_the_page(site):
    rig, reader, base = site
    pay = rig.daemon.machine.services.payment
    await until(lambda: pay.reader.ready)
    api, page = await devices(base)
    assert api["info"]["payment"]["state"] == "enabled" and 'id="payment-state">enabled<' in page
    assert 'id="payment-last-error"' not in page  # nothing went wrong yet
    row = next(d for d in api["devices"] if d["name"] == "payment")
    assert row["online"] and row["counters"]["polls"] > 0

    reader.reset_after_approval_s = 0.005  # the reader reboots while the motor runs
    reader.tap()
    order = await rig.daemon.machine.sell("A1")
    assert order["status"] == "completed" and reader.books.captured == []
    api, page = await devices(base)
    assert "reset" in api["info"]["payment"]["last_error"]
    assert 'id="payment-last-error">reader reset by itself' in page

    reader.silence(1_000_000)  # the reader goes mute on the bus
    await until(lambda: pay.reader.state.value == "offline")
    api, page = await devices(base)
    assert (
        api["info"]["payment"]["state"] == "offline" and "silent for" in api["info"]["payment"]["last_error"]
    )
    assert 'id="payment-state">offline<' in page
    db = rig.daemon.db
    await alarm(db, "device_offline:mdb_reader", True)  # a safety event, alarmed once

    reader.silence(0)  # back on the bus: the payment loop sets it up again and clears the alarm
    await until(lambda: pay.reader.ready)
    await alarm(db, "device_offline:mdb_reader", False)


async def alarm(db, key: str, active: bool) -> None:
    async with asyncio.timeout(10):
        while (key in {a["alarm_key"] for a in await repo.active_alarms(db)}) != active:
            await asyncio.sleep(0.05)

"""The diagnostics page in headless Debian chromium (Playwright), against the real daemon + simulators.

What a technician sees: log in, restock a slot (count on the page and the ledger change), test-vend
a slot (the simulated board dispenses), live numbers without reloading, a phone-sized layout; with
the cold-chain services: the cabinet temperature moves when the door opens, a lockout is cleared.
Every page is visited at desktop and phone width with the take-and-go rig (so the review queue's
evidence images load too) and any console error, 4xx/5xx response or horizontal overflow fails.
Tests never write into the source tree: the README screenshot comes from `make screenshot`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re

import pytest

from edge.clock import SystemClock
from edge.config import Secrets, WebConfig
from edge.services.accounts import Accounts
from edge.web.app import bound_port, start_web
from tests.support.review import basket_for_review
from tests.support.rigs.vend import start_rig

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120),
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium at /usr/bin/chromium")]
playwright_api = pytest.importorskip("playwright.async_api")


@pytest.fixture
async def browser():
    pw = await playwright_api.async_playwright().start()
    b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield b
    await b.close()
    await pw.stop()


async def serve(machine, **options):
    await Accounts(machine.db).add("tech", "technician", PASSWORD)
    runner = await start_web(machine, WebConfig(host="127.0.0.1", port=0), Secrets(), live_interval_s=0.2,
                             **options)
    return runner, f"http://127.0.0.1:{bound_port(runner)}"


@pytest.fixture
async def classic(tmp_path):
    rig = await start_rig(str(tmp_path), speed=200.0)
    runner, base = await serve(rig.daemon.machine)
    yield rig, base
    await runner.cleanup()
    await rig.stop()


@pytest.fixture
async def fridge(tmp_path):
    from tests.support.rigs import fridge as fridge_demo  # noqa: PLC0415
    rig = await fridge_demo.start_fridge_rig(str(tmp_path), speed=2000.0)
    machine = rig.daemon.machine
    if machine.services.temperature is None:
        await rig.stop()
        pytest.skip("machine.services has no temperature service (the plant is not wired)")
    # sessions run on wall time: the demo's clock runs 2000x and would expire a 12 h session in 22 s
    runner, base = await serve(machine, session_clock=SystemClock())
    yield rig, base
    await runner.cleanup()
    await rig.stop()


async def shown_until(page, selector, ok, timeout_s=10.0):
    """Poll the number shown in `selector` (the page's CSP forbids Playwright's eval-based waits)."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                value = float(await page.text_content(selector))
            except (TypeError, ValueError):
                value = None
            if ok(value):
                return value
            await asyncio.sleep(0.1)


async def login(browser, base, *, viewport=None):
    page = await browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
    await page.goto(base + "/")
    assert "/login" in page.url  # not logged in: sent to the login form
    await page.fill("#name", "tech")
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_selector("#machine-id")
    return page


async def test_login_restock_shows_count_and_ledger_changes(browser, classic):
    rig, base = classic
    db = rig.daemon.db
    await rig.daemon.machine.restock("A2", 1, actor="setup")
    page = await login(browser, base)
    assert await page.text_content("#machine-id") == "demo-0001"
    await page.click("nav >> text=Stock")
    assert await page.text_content('[data-count="A2"]') == "1"
    assert "low" in (await page.get_attribute("#slot-A2", "class"))
    await page.fill("#restock-slot", "A2")
    await page.fill("#restock-count", "5")
    await page.click("#restock-submit")
    await page.wait_for_selector("#flash")
    assert "restock A2: now 5" in await page.text_content("#flash")
    assert await page.text_content('[data-count="A2"]') == "5"
    assert "low" not in (await page.get_attribute("#slot-A2", "class"))
    assert (await db.fetchone("SELECT count FROM stock WHERE slot_id='A2'"))["count"] == 5
    ev = await db.fetchall("SELECT kind, data FROM events WHERE kind IN ('restock','audit') ORDER BY event_id DESC "
                           "LIMIT 2")
    docs = {r["kind"]: json.loads(r["data"]) for r in ev}
    assert docs["restock"] == {"actor": "tech", "slots": {"A2": 5}}
    assert docs["audit"]["actor"] == "tech" and docs["audit"]["action"] == "restock"
    stock_out = await db.fetchone("SELECT payload FROM outbox WHERE kind='stock' ORDER BY seq DESC LIMIT 1")
    assert json.loads(stock_out["payload"])["count"] == 5  # and the cloud hears about it


async def test_test_vend_from_the_devices_page_dispenses(browser, classic):
    rig, base = classic
    page = await login(browser, base)
    await page.click("nav >> text=Devices")
    await page.select_option("#test-vend-slot", "B3")
    await page.click("#test-vend-submit")  # the confirmation box is required: nothing happens yet
    assert rig.sim.total_dispensed == 0
    await page.check("#test-vend-confirm")
    await page.click("#test-vend-submit")
    await page.wait_for_selector("#flash")
    assert "test vend B3: completed" in await page.text_content("#flash")
    assert rig.sim.total_dispensed == 1 and rig.sim.dispensed["B3"] == 1
    row = await rig.daemon.db.fetchone("SELECT kind, status, total_amount FROM orders ORDER BY seq DESC LIMIT 1")
    assert dict(row) == {"kind": "test_vend", "status": "completed", "total_amount": 0}
    # the serial log is decoded: the VEND sent for B3 and the board's VEND_DONE with its outcome
    rows = [" | ".join(await tr.locator("td").all_text_contents()) for tr in await page.locator("#frames tbody tr").all()]
    assert any("→ sentVendReq" in r and "slot=B3" in r for r in rows), rows
    assert any("← receivedVendDone" in r and "slot=B3 outcome=OK" in r for r in rows), rows


async def test_dashboard_updates_live_and_fits_a_phone(browser, classic):
    rig, base = classic
    page = await login(browser, base)
    sold = page.locator('[data-live="sales_today.sold"]')
    assert await sold.text_content() == "0"
    await rig.daemon.machine.sell("C1", "card:live")  # a customer buys while the page is open
    await playwright_api.expect(sold).to_have_text("1", timeout=10_000)  # no reload: pushed over /live
    assert "closed, locked" in await page.text_content("#door")
    phone = await login(browser, base, viewport={"width": 390, "height": 844})
    for path in ("/", "/stock", "/devices", "/sales", "/events"):
        await phone.goto(base + path)
        overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)


async def test_events_filter_and_export(browser, classic):
    rig, base = classic
    await rig.daemon.machine.sell("A1", "card:csv")
    page = await login(browser, base)
    await page.goto(base + "/events")
    await page.select_option("#event-kind", "restock")
    await page.click("#event-filter")
    kinds = await page.locator("#events tbody tr td:nth-child(3)").all_text_contents()
    assert kinds and set(kinds) == {"restock"}
    today = dt.datetime.now(dt.UTC).date()
    span = f"start={today - dt.timedelta(days=1)}&end={today + dt.timedelta(days=1)}"
    resp = await page.request.get(base + "/export/orders.csv?" + span)
    assert resp.status == 200
    lines = (await resp.text()).strip().splitlines()
    assert lines[0].startswith("order_id,created_at") and len(lines) == 2 and ",vend,completed,180," in lines[1]


async def test_dashboard_temperature_moves_when_the_door_opens(browser, fridge):
    rig, base = fridge
    page = await login(browser, base)
    before = await shown_until(page, "#cabinet-c", lambda v: v is not None)
    await rig.plant.door.unlock(600_000, "test", actor="test")
    assert rig.sim.open_door()
    await shown_until(page, "#cabinet-c", lambda v: v is not None and v > before + 1.0, timeout_s=20)
    assert "OPEN" in await page.text_content("#door")
    points = await page.eval_on_selector("#temp-chart .cab", "e => e.getAttribute('points').split(' ').length")
    assert points > 10  # the 24 h chart is drawn
    # ... with a time axis and the lines the curve is judged by, also after the live stream redrew it
    ticks = int(await page.get_attribute("body", "data-live-ticks") or 0)
    async with asyncio.timeout(10):
        while int(await page.get_attribute("body", "data-live-ticks") or 0) < ticks + 2:
            await asyncio.sleep(0.1)
    limits = await page.locator("#temp-chart line.limit").evaluate_all("ls => ls.map(l => l.dataset.limit)")
    assert sorted(limits) == ["food_safety_limit_c", "high_alarm_c", "low_alarm_c", "setpoint_c"]
    labels = await page.locator("#temp-chart text.xtick").all_text_contents()
    assert len(labels) >= 2 and all(len(t) == 5 and t[2] == ":" for t in labels), labels
    assert "high alarm" in " ".join(await page.locator("#temp-chart text.limit-label").all_text_contents())
    rig.sim.close_door()


async def test_clear_food_safety_lockout_from_the_page(browser, fridge):
    rig, base = fridge
    temp = rig.plant.temperature
    rig.sim.fail_compressor(True)
    async with asyncio.timeout(30):
        while not temp.safety.locked:
            await asyncio.sleep(0.05)
    rig.sim.fail_compressor(False)
    page = await login(browser, base)
    await page.goto(base + "/devices")
    assert int(await page.text_content("#lockout-count")) >= 1
    await page.check("#clear-confirm")
    await page.click("#clear-lockout")
    await page.wait_for_selector("#flash")
    assert "clear food-safety lockout: cleared" in await page.text_content("#flash")
    assert not temp.safety.locked
    row = await rig.daemon.db.fetchone("SELECT cleared_by FROM lockouts ORDER BY lockout_id DESC LIMIT 1")
    assert row["cleared_by"] == "tech"
    # raw registers of the fridge controller, read on the bus now
    await page.select_option("#reg-device", "plant.bus0.fridge")
    await page.check('form[action="/devices/read-registers"] input[name=confirm]')
    await page.click("#read-registers")
    await page.wait_for_selector("#flash")
    flash = await page.text_content("#flash")
    assert flash.startswith("registers of plant.bus0.fridge:") and flash.count("=") >= 3, flash


PAGES = ["/", "/stock", "/picklist", "/sales", "/devices", "/products", "/events", "/export", "/haccp", "/prices"]
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
async def takeandgo(tmp_path):
    """The take-and-go rig (plant, scales, cameras) with one basket waiting for review, evidence on disk."""
    from tests.support.rigs import takeandgo as tg  # noqa: PLC0415
    rig = await tg.start_takeandgo_rig(str(tmp_path), seed=3)
    await basket_for_review(rig, "s-review")
    runner, base = await serve(rig.daemon.machine, session_clock=SystemClock())
    yield rig, base
    await runner.cleanup()
    await rig.stop()


def watch(page):
    """Everything a user would call broken: console errors, uncaught exceptions, 4xx/5xx answers."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}: {r.failure}")
            if not r.url.endswith("/live") else None)
    return problems


@pytest.mark.parametrize("width", sorted(VIEWPORTS))
async def test_every_page_loads_clean_and_fits(browser, takeandgo, width):
    _, base = takeandgo
    page = await browser.new_page(viewport=VIEWPORTS[width])
    problems = watch(page)
    await page.goto(base + "/login")
    assert await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    await page.fill("#name", "tech")
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_selector("#machine-id")
    for path in PAGES:
        await page.goto(base + path)
        await page.wait_for_load_state("load")
        over = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert over <= 0, f"{path} at {width}: {over} px of horizontal overflow"
        if width == "phone":  # the navigation stays on one row under the brand line
            rows = await page.evaluate("new Set([...document.querySelectorAll('nav a')].map(a => a.offsetTop)).size")
            assert rows == 1, f"{path}: navigation wraps to {rows} rows"
    await page.goto(base + "/sales")
    images = page.locator("img.evidence")
    assert await images.count() >= 1  # the review queue shows the basket's evidence
    for i in range(await images.count()):
        assert await images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    assert problems == []


async def test_live_dashboard_moves_revenue_last_ack_and_devices(browser, classic, tmp_path):
    from edge.ledger.outbox import LedgerOutbox
    from edge.services.cloud import CommandInbox, LedgerConfigSink
    from sync.client import SyncClient
    from sync.refcloud import serve as serve_cloud

    rig, base = classic
    machine, db = rig.daemon.machine, rig.daemon.db
    secret = b"browser-test-machine-secret-01"
    cloud = await serve_cloud("127.0.0.1", 0, str(tmp_path / "cloud.db"), "admin-token")
    cloud_base = f"http://127.0.0.1:{cloud.addresses[0][1]}"
    client = SyncClient(cloud_base, machine.machine_id, secret, LedgerOutbox(db),
                        LedgerConfigSink(db, lambda *_: None), CommandInbox(db))
    machine.services.sync = client
    try:
        page = await login(browser, base)
        problems = watch(page)
        revenue, ack = page.locator("#revenue"), page.locator("#last-ack")
        assert await revenue.text_content() == "0.00 EUR" and await ack.text_content() == "–"
        board = page.locator('#devices-body tr[data-device="vend_board"]')
        counters_before = await board.locator("td").nth(3).text_content()
        await machine.sell("C1", "card:live")
        await playwright_api.expect(page.locator('[data-live="sales_today.sold"]')).to_have_text("1",
                                                                                                timeout=10_000)
        price = (await db.fetchone("SELECT total_amount FROM orders WHERE status='completed'"))["total_amount"]
        await playwright_api.expect(revenue).to_have_text(f"{price // 100}.{price % 100:02d} EUR",
                                                                 timeout=10_000)
        await playwright_api.expect(board.locator("td").nth(3)).not_to_have_text(counters_before, timeout=10_000)
        async with aiohttp_session() as http:
            r = await http.post(f"{cloud_base}/admin/machines", headers={"Authorization": "Bearer admin-token"},
                                json={"machine_id": machine.machine_id, "secret_hex": secret.hex()})
            assert r.status == 201
        await client.push_once()
        await playwright_api.expect(page.locator('[data-live="sync.state"]')).to_have_text("online", timeout=10_000)
        await playwright_api.expect(ack).not_to_have_text("–", timeout=10_000)
        assert problems == []
    finally:
        await client.close()
        await cloud.cleanup()


def aiohttp_session():
    import aiohttp
    return aiohttp.ClientSession()


async def test_best_before_entered_at_restock_is_highlighted_near_expiry(browser, classic):
    rig, base = classic
    page = await login(browser, base, viewport=VIEWPORTS["phone"])
    await page.goto(base + "/stock")
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    await page.fill("#restock-slot", "A1")
    await page.fill("#restock-count", "3")
    await page.fill("#restock-best-before", tomorrow)
    await page.click("#restock-submit")
    await page.wait_for_selector("#flash")
    assert f"restock A1: now 3, best before {tomorrow}" in await page.text_content("#flash")
    row = await rig.daemon.db.fetchone("SELECT count, best_before FROM stock WHERE slot_id='A1'")
    assert dict(row) == {"count": 3, "best_before": tomorrow}
    assert "near" in (await page.get_attribute("#slot-A1", "class")).split()
    assert "1 near or past best-before" in await page.text_content("#expiring")
    await page.fill("#restock-slot", "A2")
    await page.fill("#restock-best-before", "2020-01-01")  # already past: refused, nothing changes
    await page.click("#restock-submit")
    await page.wait_for_selector("#flash")
    assert "refused" in await page.text_content("#flash")
    assert (await rig.daemon.db.fetchone("SELECT best_before FROM stock WHERE slot_id='A2'"))["best_before"] is None
    assert await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0


async def test_review_basket_approved_from_the_sales_page(browser, takeandgo):
    rig, base = takeandgo
    db = rig.daemon.db
    assert (await db.fetchone("SELECT status FROM orders WHERE order_id='s-review'"))["status"] == "needs_review"
    page = await login(browser, base, viewport=VIEWPORTS["phone"])
    problems = watch(page)
    await page.goto(base + "/sales")
    item = page.locator("#review-s-review")
    await item.locator("input[name=confirm]").check()
    await item.locator("button.approve").click()
    await page.wait_for_selector("#flash")
    assert "review s-review: completed" in await page.text_content("#flash")
    assert (await db.fetchone("SELECT status FROM orders WHERE order_id='s-review'"))["status"] == "completed"
    assert await page.locator("#review-s-review").count() == 0 and problems == []


async def test_times_are_shown_in_the_configured_zone(browser, tmp_path):
    """web.timezone = Asia/Kolkata (UTC+05:30): the events page shows the ledger's UTC times moved by 5:30;
    web.allowed_hosts adds a Host name the page answers to."""
    rig = await start_rig(str(tmp_path), speed=200.0)
    machine = rig.daemon.machine
    await Accounts(machine.db).add("tech", "technician", PASSWORD)
    cfg = WebConfig(host="127.0.0.1", port=0, timezone="Asia/Kolkata", allowed_hosts=("vm-7.example",))
    runner = await start_web(machine, cfg, Secrets())
    try:
        async with aiohttp_session() as http:  # web.allowed_hosts: that name is served, others are not
            url = f"http://127.0.0.1:{bound_port(runner)}/login"
            assert (await http.get(url, headers={"Host": "vm-7.example:8080"})).status == 200
            assert (await http.get(url, headers={"Host": "vm-8.example:8080"})).status == 421
        page = await login(browser, f"http://127.0.0.1:{bound_port(runner)}")
        assert "Asia/Kolkata (IST, UTC+05:30)" in await page.text_content("#timezone")
        assert re.fullmatch(r"\d+ s|\d+ min|\d+ h \d+ min", await page.text_content("#uptime"))  # not "12.3 s"
        await page.goto(f"http://127.0.0.1:{bound_port(runner)}/events")
        row = await machine.db.fetchone("SELECT at FROM events ORDER BY event_id DESC LIMIT 1")
        utc = dt.datetime.fromisoformat(row["at"].replace("Z", "+00:00"))
        local = (utc + dt.timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M:%S")
        shown = await page.locator("#events tbody tr td:nth-child(2)").all_text_contents()
        assert local in shown and row["at"] not in shown
    finally:
        await runner.cleanup()
        await rig.stop()


async def test_fleet_page_fits_a_phone(browser, tmp_path):
    from sync.refcloud import serve as serve_cloud

    cloud = await serve_cloud("127.0.0.1", 0, str(tmp_path / "cloud.db"), "admin-token")
    base = f"http://127.0.0.1:{cloud.addresses[0][1]}"
    try:
        async with aiohttp_session() as http:
            for i in range(3):
                r = await http.post(f"{base}/admin/machines", headers={"Authorization": "Bearer admin-token"},
                                    json={"machine_id": f"vm-with-a-long-name-{i:04d}", "secret_hex": "ab" * 16})
                assert r.status == 201
        ctx = await browser.new_context(viewport=VIEWPORTS["phone"],
                                        http_credentials={"username": "ops", "password": "admin-token"})
        page = await ctx.new_page()
        problems = watch(page)
        await page.goto(base + "/fleet")
        assert await page.locator("#fleet tbody tr").count() == 3
        assert await page.get_attribute('meta[name="viewport"]', "content") == "width=device-width, initial-scale=1"
        assert await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
        assert problems == []
        await ctx.close()
    finally:
        await cloud.cleanup()

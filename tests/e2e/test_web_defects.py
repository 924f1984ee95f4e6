"""Issue 14's page and /metrics defects, each against the real daemon + simulators over real HTTP.

Every test here failed before its fix: evidence images (500), cloud state (always offline), restock
with -1 / `true`, the clear-lockout message, 500s on huge or odd query values, /live outliving the
session, `next=` bypasses, Host/Origin checks, the Server header, /metrics names and precision.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.clock import SystemClock
from edge.config import Secrets, WebConfig
from edge.ledger.outbox import LedgerOutbox
from edge.services.accounts import Accounts
from edge.services.cloud import CommandInbox, LedgerConfigSink
from edge.web.app import bound_port, start_web
from edge.web.keys import QUERIES, TECHNICIAN
from sync.client import SyncClient
from sync.refcloud import serve
from tests.e2e.test_web_security import PASSWORD, web  # noqa: F401  (the shared fixture)
from tests.support.review import basket_for_review
from tests.support.rigs.takeandgo import start_takeandgo_rig

pytestmark = pytest.mark.timeout(90)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def scrape(web) -> str:  # noqa: F811
    async with web.client() as s:
        r = await s.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert r.status == 200
        return await r.text()


async def test_review_queue_evidence_images_are_served(tmp_path):
    rig = await start_takeandgo_rig(str(tmp_path), seed=3)
    runner = None
    try:
        await basket_for_review(rig, "s-ambig")
        machine = rig.daemon.machine
        await Accounts(machine.db).add("tech", "technician", PASSWORD)
        runner = await start_web(machine, WebConfig(host="127.0.0.1", port=0), Secrets())
        base = f"http://127.0.0.1:{bound_port(runner)}"
        async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            assert (await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})).status == 200
            queue = (await (await s.get("/api/v1/sales")).json())["review_queue"]
            urls = [u for item in queue for u in item["evidence"]]
            assert "/evidence/s-ambig/before_shelf1.jpg" in urls
            for url in urls:
                r = await s.get(url)
                body = await r.read()
                assert r.status == 200 and r.content_type == "image/jpeg" and body[:2] == b"\xff\xd8", url
            assert (await s.get("/evidence/s-ambig/before_shelf0.jpg")).status == 404  # the dead camera's
            page = await (await s.get("/sales")).text()
            assert 'src="/evidence/s-ambig/before_shelf1.jpg"' in page
    finally:
        if runner is not None:
            await runner.cleanup()
        await rig.stop()


async def test_cloud_state_follows_the_sync_client(web, tmp_path):  # noqa: F811
    machine, db = web.rig.daemon.machine, web.rig.daemon.db
    token, secret = "admin-token", b"web-test-machine-secret-0123"
    cloud = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), token)
    cloud_base = f"http://127.0.0.1:{cloud.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            r = await http.post(f"{cloud_base}/admin/machines", headers={"Authorization": f"Bearer {token}"},
                                json={"machine_id": machine.machine_id, "secret_hex": secret.hex()})
            assert r.status == 201
        client = SyncClient(cloud_base, machine.machine_id, secret, LedgerOutbox(db),
                            LedgerConfigSink(db, lambda *_: None), CommandInbox(db))
        machine.services.sync = client
        s, _ = await web.login("view")
        async with s:
            web.app[QUERIES].invalidate()
            before = (await (await s.get("/api/v1/status")).json())["sync"]
            assert before["state"] == "offline" and before["online"] is False
            await client.push_once()
            assert client.status["online"] is True
            web.app[QUERIES].invalidate()
            after = (await (await s.get("/api/v1/status")).json())["sync"]
            assert after["state"] == "online" and after["online"] is True and after["last_ack"]
            page = await (await s.get("/")).text()
            assert '<dd data-live="sync.state">online</dd>' in page
        assert samples(await scrape(web))[("vendedge_sync_online", ())] == 1
        await client.close()
    finally:
        await cloud.cleanup()


async def test_restock_refuses_negative_and_boolean_counts(web):  # noqa: F811
    db = web.rig.daemon.db
    await web.rig.daemon.machine.restock("A2", 1, actor="setup")
    s, csrf = await web.login("tech")
    async with s:
        r = await s.post("/stock/restock", data={"csrf": csrf, "slot_id": "A2", "count": "-1"},
                         allow_redirects=False)
        assert r.status == 303
        page = await (await s.get("/stock")).text()
        assert "count must be a whole number" in page
        for bad in (True, -1, 1.5, "3"):
            r = await s.post("/api/v1/stock/restock", json={"slot_id": "A2", "count": bad},
                             headers={"X-CSRF-Token": csrf})
            assert r.status == 400 and (await r.json())["error"] == "bad_request", bad
    assert (await db.fetchone("SELECT count FROM stock WHERE slot_id='A2'"))["count"] == 1


async def test_clear_lockout_says_when_none_was_active(tmp_path):
    from tests.support.rigs import fridge as fridge_demo  # noqa: PLC0415
    rig = await fridge_demo.start_fridge_rig(str(tmp_path), speed=200.0)
    runner = None
    try:
        machine = rig.daemon.machine
        if machine.services.temperature is None:
            pytest.skip("the fridge rig has no temperature service")
        await Accounts(machine.db).add("tech", "technician", PASSWORD)
        runner = await start_web(machine, WebConfig(host="127.0.0.1", port=0), Secrets(),
                                 session_clock=SystemClock())
        base = f"http://127.0.0.1:{bound_port(runner)}"
        async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            r = await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})
            csrf = (await r.json())["csrf"]
            await s.post("/devices/clear-lockout", data={"csrf": csrf, "confirm": "yes"}, allow_redirects=False)
            page = await (await s.get("/devices")).text()
            assert "clear food-safety lockout: no lockout was active" in page
            assert "lockout: cleared" not in page
    finally:
        if runner is not None:
            await runner.cleanup()
        await rig.stop()


@pytest.mark.parametrize("path", ["/events?page=99999999999999999999", "/api/v1/events?page=922337203685477581",
                                  "/api/v1/events?page=-5&per_page=99999999999999999999",
                                  "/sales?day=9999-12-31", "/api/v1/sales?day=9999-12-31",
                                  "/export/orders.csv?start=9999-12-30&end=9999-12-31"])
async def test_huge_or_edge_query_values_answer_without_a_server_error(web, path):  # noqa: F811
    s, _ = await web.login("view")
    async with s:
        r = await s.get(path)
        assert r.status in (200, 400), (path, r.status, await r.text())


@pytest.mark.parametrize("nxt", ["/\n/evil.example", "/\t/evil.example", "/\r\n/x", "/ /evil.example",
                                 "//evil.example", "/\\evil.example", "https://evil.example"])
async def test_login_next_only_goes_to_a_same_site_path(web, nxt):  # noqa: F811
    async with web.client() as s:
        page = await (await s.get("/login")).text()
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await s.post("/login", data={"csrf": token, "name": "tech", "password": PASSWORD, "next": nxt},
                         allow_redirects=False)
        assert r.status in (302, 303), await r.text()
        assert r.headers["Location"] == "/"
        r = await s.get("/login", params={"next": nxt})
        assert r.status == 200


async def test_live_stream_ends_at_logout(web):  # noqa: F811
    s, csrf = await web.login("view")
    async with s:
        resp = await s.get("/live")
        assert resp.status == 200
        async with asyncio.timeout(10):
            first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"event: snapshot")
        async with web.client() as other:  # the same session logged out from elsewhere
            other.cookie_jar.update_cookies({c.key: c.value for c in s.cookie_jar})
            assert (await other.post("/logout", data={"csrf": csrf}, allow_redirects=False)).status in (302, 303)
        await web.rig.daemon.machine.restock("A1", 2, actor="setup")  # something new to push
        async with asyncio.timeout(10):
            rest = await resp.content.read()  # returns when the server ends the stream
        assert b"event: snapshot" not in rest


async def test_foreign_host_and_null_origin_are_refused(web):  # noqa: F811
    s, csrf = await web.login("tech")
    counts = await web.counts()
    async with s:
        r = await s.get("/api/v1/me", headers={"Host": "evil.example"})
        assert r.status == 421
        r = await s.get("/metrics", headers={"Host": "machine.service.lan:8080",  # a scraper by DNS name
                                             "Authorization": "Bearer s3cret-token"})
        assert r.status == 200
        for origin in ("null", "http://evil.example"):
            r = await s.post("/api/v1/devices/test-vend", json={"slot_id": "B2", "confirm": True},
                             headers={"X-CSRF-Token": csrf, "Origin": origin})
            assert r.status == 403 and (await r.json())["error"] == "bad_origin"
        assert await web.counts() == counts
        r = await s.post("/api/v1/stock/restock", json={"slot_id": "A1", "count": 3},
                         headers={"X-CSRF-Token": csrf, "Origin": web.base})
        assert r.status == 200  # the page's own origin works
        assert "aiohttp" not in r.headers.get("Server", "").lower() and "python" not in r.headers["Server"].lower()


async def test_metrics_pass_names_precision_and_bad_authorization(web):  # noqa: F811
    db = web.rig.daemon.db
    before = samples(await scrape(web))[("vendedge_revenue_today_minor", ())]
    now = db.clock.now_iso()
    async with db.tx() as tx:  # a good day's revenue past 10^6 minor units ({:g} printed 1.23457e+06)
        await tx.execute("INSERT INTO orders (order_id, kind, status, total_amount, currency, created_at, "
                         "updated_at, seq) VALUES ('big', 'sale', 'completed', 1234567, 'EUR', ?, ?, 0)", (now, now))
    web.app[QUERIES].invalidate()
    text = await scrape(web)
    got = samples(text)
    assert got[("vendedge_revenue_today_minor", ())] - before == 1234567  # every digit survives
    assert "_counter_total" not in text and "vendedge_device_events_total" in text
    # aiohttp's client will not send a non-UTF-8 header: write the request by hand
    reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(web.runner))
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"401", status_line


async def test_audit_of_a_refused_restock_leaves_stock_alone(web):  # noqa: F811
    s, csrf = await web.login("tech")
    async with s:
        r = await s.post("/api/v1/stock/restock", json={"slot_id": "A1", "count": True},
                         headers={"X-CSRF-Token": csrf})
        assert r.status == 400
    rows = await web.rig.daemon.db.fetchall("SELECT data FROM events WHERE kind='audit'")
    assert not any(json.loads(x["data"]).get("action") == "restock" for x in rows)


async def test_sales_page_names_products_and_currency(web):  # noqa: F811
    await web.rig.daemon.machine.sell("C1", "card:names")
    s, _ = await web.login("view")
    async with s:
        page = await (await s.get("/sales")).text()
        dash = await (await s.get("/")).text()
    orders = page.split('id="orders"', 1)[1]
    assert "1× Cookies (C1)" in orders.split("</table>", 1)[0], orders[:600]
    assert " EUR</dd>" in page and " EUR</dd>" in dash  # revenue with its currency


async def test_pick_list_brings_each_slot_to_par(web):  # noqa: F811
    machine = web.rig.daemon.machine
    await machine.restock("A2", 1, actor="setup")
    await machine.sell("C1", "card:pick")
    stock = {r["slot_id"]: r for r in await web.app[QUERIES].stock()}
    s, _ = await web.login("view")
    async with s:
        doc = await (await s.get("/api/v1/picklist")).json()
        page = await (await s.get("/picklist")).text()
    by_slot = {ln["slot_id"]: ln for ln in doc["lines"]}
    assert by_slot["A2"]["bring"] == stock["A2"]["capacity"] - 1
    assert by_slot["C1"]["bring"] == 1 and by_slot["C1"]["name"] == "Cookies"
    assert doc["items"] == sum(r["capacity"] - r["count"] for r in stock.values())
    assert f'<tr data-slot="C1"><td>C1</td><td>Cookies</td><td>{stock["C1"]["count"]}</td>' in page
    assert f'id="pick-items">{doc["items"]}<' in page


async def test_pick_list_replaces_fresh_food_at_its_best_before(web):  # noqa: F811
    """A lane whose best-before is tomorrow: everything in it is swapped out on the next visit."""
    q = web.app[QUERIES]
    tomorrow = (dt.date.fromisoformat(q.today()) + dt.timedelta(days=1)).isoformat()
    await web.app[TECHNICIAN].restock("tech", "D3", 3, tomorrow)
    s, _ = await web.login("view")
    async with s:
        doc = await (await s.get("/api/v1/picklist")).json()
        page = await (await s.get("/picklist")).text()
        stock = {r["slot_id"]: r for r in (await (await s.get("/api/v1/stock")).json())["slots"]}
    d3 = next(ln for ln in doc["lines"] if ln["slot_id"] == "D3")
    assert stock["D3"]["best_before"] == tomorrow and stock["D3"]["expiry"] == "near"
    assert d3["replace"] == 3 and d3["bring"] == stock["D3"]["capacity"]  # 3 swapped + the empty places
    assert f"3 (best before {tomorrow})" in page


async def test_alarm_history_shows_raised_cleared_and_how_long(web):  # noqa: F811
    from edge.ledger import repo
    from edge.services.queries import human_duration

    db = web.rig.daemon.db
    async with db.tx() as tx:
        await repo.raise_alarm(tx, "low_stock:Z9", "low_stock", "Z9 is low", severity="warning")
    async with db.tx() as tx:
        await repo.clear_alarm(tx, "low_stock:Z9", "restocked")
    async with db.tx() as tx:
        await repo.raise_alarm(tx, "low_stock:Z9", "low_stock", "Z9 is low again", severity="warning")
    s, _ = await web.login("view")
    async with s:
        alarms = [a for a in (await (await s.get("/api/v1/alarms")).json())["alarms"] if a["alarm_key"] == "low_stock:Z9"]
        page = await (await s.get("/events")).text()
    assert [a["message"] for a in alarms] == ["Z9 is low again", "Z9 is low"]  # newest first, two episodes
    assert alarms[0]["cleared_at"] is None and alarms[0]["duration"] == "active"
    assert alarms[1]["cleared_at"] >= alarms[1]["raised_at"] and alarms[1]["duration_s"] >= 0
    assert 'data-alarm="low_stock:Z9"' in page and '<td class="lasted">active</td>' in page
    assert [human_duration(x) for x in (5, 125, 3 * 3600 + 720, 2 * 86400 + 5 * 3600, None)] == [
        "5 s", "2 min", "3 h 12 min", "2 d 5 h", "–"]


async def test_stock_page_lists_jams_per_slot(web):  # noqa: F811
    web.rig.sim.jam("B3", times=2)
    machine = web.rig.daemon.machine
    for _ in range(2):
        await machine.sell("B3", "card:jam")
    s, _ = await web.login("view")
    async with s:
        page = await (await s.get("/stock")).text()
    table = page.split('id="slot-failures"', 1)[1].split("</table>", 1)[0]
    rows = await web.rig.daemon.db.fetchall(
        "SELECT o.reason FROM orders o JOIN order_lines l USING(order_id) WHERE l.slot_id='B3' AND o.status='failed'")
    assert len(rows) == 2
    assert '<tr data-slot="B3"><td>B3</td>' in table and '<td class="count">2</td>' in table
    assert rows[0]["reason"] in table

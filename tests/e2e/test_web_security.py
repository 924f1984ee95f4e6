"""Security of the diagnostics app against the real daemon + simulated board, over real HTTP.

Every route is taken from the app's own router, so a new route is covered the day it is added.
Each refusal is checked twice: the status a client sees, and that nothing in the ledger (or the
simulator) moved.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.cli_users import user_command
from edge.config import Secrets, WebConfig
from edge.core.accounts import MAX_FAILURES
from edge.services.accounts import Accounts
from edge.web.app import bound_port, route_table, start_web
from tests.support.rigs.vend import start_rig

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse battery"
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("POST", "/api/v1/login"), ("GET", "/metrics"),
          ("GET", "/healthz"), ("GET", "/static/{name}")}
SELF_SERVICE = {("POST", "/logout"), ("POST", "/api/v1/logout")}  # any logged-in user (with CSRF)
KIOSK_ACTIONS = {("POST", "/api/v1/kiosk/sell")}  # the touchscreen app's sale (kiosk role or technician)


class Web:
    def __init__(self, rig, runner) -> None:
        self.rig, self.runner = rig, runner
        self.base = f"http://127.0.0.1:{bound_port(runner)}"
        self.app = runner.app

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.base, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def login(self, name: str, password: str = PASSWORD) -> tuple[aiohttp.ClientSession, str]:
        s = self.client()
        r = await s.post("/api/v1/login", json={"name": name, "password": password})
        assert r.status == 200, await r.text()
        return s, (await r.json())["csrf"]

    async def counts(self) -> dict[str, int]:
        """Everything a refused request must leave alone."""
        db = self.rig.daemon.db
        out = {}
        for table in ("events", "outbox", "orders", "vend_journal", "lockouts", "users"):
            out[table] = (await db.fetchone(f"SELECT COUNT(*) AS n FROM {table}"))["n"]
        out["stock_sum"] = (await db.fetchone("SELECT SUM(count) AS n FROM stock"))["n"]
        out["dispensed"] = self.rig.sim.total_dispensed
        out["door_locked"] = int(self.rig.sim.door_locked)
        return out


@pytest.fixture
async def web(tmp_path):
    rig = await start_rig(str(tmp_path), speed=200.0)
    machine = rig.daemon.machine
    users = Accounts(machine.db)
    await users.add("tech", "technician", PASSWORD)
    await users.add("view", "viewer", PASSWORD)
    runner = await start_web(machine, WebConfig(host="127.0.0.1", port=0), Secrets(metrics_token="s3cret-token"))
    yield Web(rig, runner)
    await runner.cleanup()
    await rig.stop()


def concrete(path: str) -> str:
    """A real URL for a route pattern: every {param} gets a plausible value."""
    return (path.replace("{sid}", "s-1").replace("{sku}", "cola").replace("{name}", "app.css")
            .replace("{order_id}", "o-1"))


def action_routes(web: Web) -> list[dict]:
    return [r for r in route_table(web.app) if r["method"] == "POST" and (r["method"], r["path"]) not in PUBLIC]


async def post_action(s: aiohttp.ClientSession, path: str, csrf: str | None) -> aiohttp.ClientResponse:
    """The request a real client would send: JSON + header for the API, a form for pages (a route
    pattern's {params} get plausible values, so the request reaches the route and its checks)."""
    path = concrete(path)
    if path.startswith("/api/"):
        headers = {"X-CSRF-Token": csrf} if csrf is not None else {}
        body = {"slot_id": "A1", "count": 2, "confirm": True, "ms": 1000, "shelf": 0}
        return await s.post(path, json=body, headers=headers, allow_redirects=False)
    form = {"slot_id": "A1", "count": "2", "confirm": "yes", "ms": "1000", "shelf": "0"}
    if csrf is not None:
        form["csrf"] = csrf
    return await s.post(path, data=form, allow_redirects=False)


async def test_every_route_is_listed_and_only_the_known_few_are_public(web):
    routes = [r for r in route_table(web.app) if r["method"] != "HEAD"]
    public = {(r["method"], r["path"]) for r in routes if r["access"] == "public"}
    assert public == PUBLIC
    for r in routes:  # every state-changing route is technician-only, except logging in/out and the kiosk sale
        if r["method"] == "POST" and (r["method"], r["path"]) not in PUBLIC | SELF_SERVICE:
            assert r["access"] == ("kiosk" if (r["method"], r["path"]) in KIOSK_ACTIONS else "technician"), r
    assert len(routes) >= 30


async def test_unauthenticated_pages_redirect_and_api_answers_401(web):
    before = await web.counts()
    async with web.client() as s:
        for r in route_table(web.app):
            if (r["method"], r["path"]) in PUBLIC or r["method"] == "HEAD":
                continue
            path = concrete(r["path"])
            resp = await (s.get(path, allow_redirects=False) if r["method"] == "GET"
                          else post_action(s, path, "forged"))
            if path.startswith("/api/") or path == "/live":
                assert resp.status == 401, (r, resp.status)
                assert (await resp.json())["error"] == "login_required"
            else:
                assert resp.status == 302, (r, resp.status)
                assert resp.headers["Location"].startswith("/login?next=")
    assert await web.counts() == before


async def test_viewer_reads_but_cannot_act(web):
    s, csrf = await web.login("view")
    async with s:
        assert (await s.get("/stock")).status == 200
        assert (await s.get("/api/v1/status")).status == 200
        page = await (await s.get("/devices")).text()
        assert "test-vend-submit" not in page  # no buttons a viewer could not use
        before = await web.counts()
        for r in action_routes(web):
            if (r["method"], r["path"]) in SELF_SERVICE:
                continue
            resp = await post_action(s, r["path"], csrf)
            assert resp.status == 403, (r, resp.status)
        assert await web.counts() == before


async def test_missing_or_wrong_csrf_is_refused(web):
    s, csrf = await web.login("tech")
    async with s:
        before = await web.counts()
        for r in action_routes(web):
            for token in (None, "", csrf[:-2] + "xx"):
                resp = await post_action(s, r["path"], token)
                assert resp.status == 403, (r, token, resp.status)
        assert await web.counts() == before
        # the same request with the right token works: the refusals above were about the token alone
        ok = await post_action(s, "/api/v1/stock/restock", csrf)
        assert ok.status == 200 and (await ok.json())["result"] == {"A1": 2}


async def test_six_wrong_passwords_lock_the_account(web):
    async with web.client() as s:
        login = await (await s.get("/login")).text()
        token = re.search(r'name="csrf" value="([^"]+)"', login).group(1)
        for _ in range(MAX_FAILURES):
            r = await s.post("/login", data={"name": "tech", "password": "guess", "csrf": token})
            assert r.status == 401 and "Wrong name or password" in await r.text()
        r = await s.post("/login", data={"name": "tech", "password": PASSWORD, "csrf": token},
                         allow_redirects=False)
        text = await r.text()
        assert r.status == 429 and re.search(r"locked after repeated failures\. Try again in (30|29) s\.", text)
        assert "vendedge_session" not in {c.key for c in s.cookie_jar}
        api = await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})
        assert api.status == 429 and (await api.json())["error"] == "locked"
    rows = await web.rig.daemon.db.fetchall("SELECT data FROM events WHERE kind='audit'")
    logins = [json.loads(r["data"]) for r in rows if '"login"' in r["data"]]
    assert [a["outcome"] for a in logins] == ["bad_credentials"] * 5 + ["locked", "locked"]


async def test_login_form_needs_its_token(web):
    async with web.client() as s:
        r = await s.post("/login", data={"name": "tech", "password": PASSWORD, "csrf": "made-up"},
                         allow_redirects=False)
        assert r.status == 403
        assert (await s.get("/", allow_redirects=False)).status == 302


@pytest.mark.parametrize("raw", ["/static/../pyproject.toml", "/static/%2e%2e/app.py", "/static/..%2fapp.py",
                                 "/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/static/..%5c..%5cpyproject.toml",
                                 "/static//etc/passwd", "/static/app.css%00.js", "/static/", "/static/.",
                                 "/static/templates%2fbase.html"])
async def test_static_path_traversal_is_404(web, raw):
    host, port = "127.0.0.1", bound_port(web.runner)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {raw} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    status = int(head.split(b" ", 2)[1])
    assert status == 404, (raw, head[:200])
    assert b"[project]" not in head and b"root:" not in head


async def test_static_files_are_served_with_security_headers(web):
    async with web.client() as s:
        r = await s.get("/static/app.css")
        assert r.status == 200 and r.content_type == "text/css"
        for path in ("/static/app.css", "/login", "/api/v1/status", "/nowhere"):
            h = (await s.get(path, allow_redirects=False)).headers
            assert "default-src 'self'" in h["Content-Security-Policy"], path
            assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff", path


async def test_oversized_body_is_413_and_changes_nothing(web):
    s, csrf = await web.login("tech")
    async with s:
        before = await web.counts()
        big = {"slot_id": "A1", "count": "2", "csrf": csrf, "pad": "x" * 200_000}
        r = await s.post("/stock/restock", data=big, headers={"X-CSRF-Token": csrf})
        assert r.status == 413
        r = await s.post("/api/v1/stock/restock", data=json.dumps({"slot_id": "A1", "pad": "x" * 200_000}),
                         headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"})
        assert r.status == 413 and (await r.json())["error"] == "too_large"

        async def chunks():  # no Content-Length: the limit must hold while reading
            for _ in range(40):
                yield b"x" * 8192
        r = await s.post("/stock/restock", data=chunks(),
                         headers={"X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 413
        assert await web.counts() == before


async def test_session_cookie_flags_and_logout(web):
    async with web.client() as s:
        r = await s.post("/api/v1/login", json={"name": "tech", "password": PASSWORD})
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        csrf = (await r.json())["csrf"]
        assert (await s.get("/api/v1/me")).status == 200
        assert (await s.post("/api/v1/logout", headers={"X-CSRF-Token": csrf})).status == 200
        assert (await s.get("/api/v1/me")).status == 401


async def test_metrics_need_the_bearer_token(web):
    async with web.client() as s:
        assert (await s.get("/metrics")).status == 401
        assert (await s.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
        r = await s.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
        text = await r.text()
    a1 = (await web.rig.daemon.db.fetchone("SELECT count FROM stock WHERE slot_id='A1'"))["count"]
    samples = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
               for fam in text_string_to_metric_families(text) for smp in fam.samples}
    assert samples[("vendedge_stock_items", (("slot", "A1"),))] == a1
    assert samples[("vendedge_device_online", (("device", "vend_board"),))] == 1


async def test_technician_api_action_is_audited_and_reaches_the_outbox(web):
    s, csrf = await web.login("tech")
    async with s:
        r = await s.post("/api/v1/devices/test-vend", json={"slot_id": "B2", "confirm": True},
                         headers={"X-CSRF-Token": csrf})
        body = await r.json()
    assert r.status == 200 and body["result"]["status"] == "completed"
    assert web.rig.sim.total_dispensed == 1
    rows = await web.rig.daemon.db.fetchall("SELECT data FROM events WHERE kind='audit'")
    actions = [json.loads(x["data"]) for x in rows]
    assert {"actor": "tech", "action": "test_vend", "outcome": "ok", "slot_id": "B2"} in actions
    outbox = await web.rig.daemon.db.fetchall("SELECT payload FROM outbox WHERE kind='event'")
    assert any('"test_vend"' in o["payload"] and '"audit"' in o["payload"] for o in outbox)


async def test_no_default_account_and_cli_creates_one(web, tmp_path, monkeypatch):
    async with web.client() as s:
        for name, pw in (("admin", "admin"), ("root", ""), ("technician", "technician")):
            assert (await s.post("/api/v1/login", json={"name": name, "password": pw})).status == 401
    cfg = web.rig.state_dir / "vendedge.toml"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    args = argparse.Namespace(action="add", name="maria", role="technician", config=str(cfg), password_stdin=True)
    assert await asyncio.to_thread(user_command, args) == 0
    s, csrf = await web.login("maria", "a long enough secret")
    async with s:
        assert (await (await s.get("/api/v1/me")).json())["role"] == "technician"


@pytest.mark.parametrize("sid, name", [("..", "before_shelf0.jpg"), ("s-1", "../../ledger.sqlite3"),
                                       ("s-1", "summary.json"), ("s-1", "before_shelf0.jpg")])
def test_evidence_route_serves_only_stored_review_images(sid, name):
    from edge.services.evidence import EvidenceStore

    store = EvidenceStore("/nonexistent-evidence-root", 10, None)  # type: ignore[arg-type]
    assert store.path(sid, name) is None  # bad names never reach the file system; missing ones are None

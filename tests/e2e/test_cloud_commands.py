"""Issue 5, done-when #2 and #3 through the real daemon (a subprocess), the simulated board and the
reference cloud: price changes from the cloud reach the next sale, an invalid catalog is refused
with an error event, a re-delivered or replayed `vend` dispenses once, and forged commands — from a
man in the middle or from anyone without the machine's secret — never move a motor or a door.

The request-level 401 cases (bad signature, stale timestamp, replayed nonce, unknown machine on
push) are in tests/integration/test_refcloud.py; `test_security_...` here adds them for the
command channel and for a whole daemon holding the wrong secret.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hw_sim.vend_board import SimThread, SimVendBoard, run_in_thread
from hw_sim.world import load_demo_planogram
from sync import signing
from sync.refcloud import serve
from sync.refcloud.app import STORE, run_db
from tests.support.run_daemon import DaemonProcess, spiral_stock, write_sync_config

TOKEN = "cmd-admin-token"
MACHINE = "demo-0001"
SECRET = b"cmd-machine-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
pytestmark = pytest.mark.timeout(60)


@dataclass
class Mitm:
    """A man in the middle on the machine's link: forwards to the cloud, and on demand loses
    command results, injects commands into poll answers and remembers every command it saw."""

    upstream: str
    http: aiohttp.ClientSession
    drop_results: int = 0
    inject: list[dict[str, Any]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # forwarded (id, body)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # aiohttp has already un-gzipped it; the signature covers this
        if request.method == "POST" and request.path.endswith("/result"):
            if self.drop_results:
                self.drop_results -= 1
                return web.Response(status=502)
            self.results.append((request.path.split("/")[-2], json.loads(body)))
        headers = {k: v for k, v in request.headers.items()
                   if k.startswith("X-") or k in ("If-None-Match", "Content-Type")}
        async with self.http.request(request.method, self.upstream + request.path_qs, data=body,
                                     headers=headers) as r:
            data, status, etag = await r.read(), r.status, r.headers.get("ETag")
        if status == 304:
            return web.Response(status=304, headers={"ETag": etag or ""})
        if request.path.endswith("/commands") and status == 200:
            doc = json.loads(data)
            self.seen.extend(json.loads(json.dumps(doc["commands"])))
            doc["commands"] += self.inject
            self.inject = []
            data = json.dumps(doc).encode()
        return web.Response(status=status, body=data, content_type="application/json")


@dataclass
class Rig:
    cloud: str
    app: web.Application
    http: aiohttp.ClientSession
    mitm: Mitm
    daemon: DaemonProcess
    sim: SimVendBoard
    board: SimThread
    ledger: pathlib.Path

    async def admin(self, method: str, tail: str, body: object = None,
                    headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with asyncio.timeout(10):
            async with self.http.request(method, f"{self.cloud}/admin/machines/{MACHINE}{tail}", json=body,
                                         headers=ADMIN if headers is None else headers) as r:
                return r.status, await r.json()

    def sim_read(self, fn: Callable[[], Any]) -> Any:
        return self.board.call(fn)

    def ledger_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.ledger)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()


async def _start_site(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@asynccontextmanager
async def _rig(tmp_path: pathlib.Path, machine_secret: bytes) -> AsyncIterator[Rig]:
    cloud_runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN)
    cloud = f"http://127.0.0.1:{cloud_runner.addresses[0][1]}"
    http = aiohttp.ClientSession()
    mitm = Mitm(cloud, http)
    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", mitm.forward)
    proxy_runner, proxy = await _start_site(proxy_app)
    async with http.post(f"{cloud}/admin/machines", headers=ADMIN,
                         json={"machine_id": MACHINE, "secret_hex": SECRET.hex()}) as r:
        assert r.status == 201
    state = tmp_path / "state"
    cfg = write_sync_config(state, board_port=str(tmp_path / "ttyVEND"), url=proxy, secret=machine_secret,
                            poll_wait_s=1.0)
    sim = SimVendBoard(spiral_stock(state), motor_ms=1200, speed=200)
    board = run_in_thread(sim, link_path=str(tmp_path / "ttyVEND"))
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log")
    try:
        await daemon.start()
        await daemon.ask("restock")
        yield Rig(cloud, cloud_runner.app, http, mitm, daemon, sim, board, state / "data" / "ledger.sqlite3")
        assert await daemon.stop() == 0
    finally:
        await daemon.kill()
        board.stop()
        await proxy_runner.cleanup()
        await http.close()
        await cloud_runner.cleanup()


@pytest.fixture
async def rig(tmp_path: pathlib.Path) -> AsyncIterator[Rig]:
    async with _rig(tmp_path, SECRET) as r:
        yield r


async def until(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what or predicate}")


async def _command(rig: Rig, name: str, args: dict[str, Any]) -> str:
    status, doc = await rig.admin("POST", "/commands", {"name": name, "args": args, "ttl_s": 300})
    assert status == 201
    return str(doc["command_id"])


async def _cloud_command(rig: Rig, command_id: str) -> dict[str, Any]:
    _, doc = await rig.admin("GET", "/commands")
    return next(c for c in doc["commands"] if c["command_id"] == command_id)


async def _done(rig: Rig, command_id: str) -> dict[str, Any] | None:
    c = await _cloud_command(rig, command_id)
    return c if c["state"] == "done" else None


# --- config and prices ------------------------------------------------------------------------
async def test_price_change_in_the_cloud_applies_to_the_next_sale(rig: Rig) -> None:
    assert (await rig.daemon.ask("sell A1"))["total"] == 180  # cola, seeded price
    doc = load_demo_planogram()
    assert (await rig.admin("PUT", "/config", doc))[0] == 200
    status, body = await rig.admin("POST", "/prices", {"sku_id": "cola", "price": 210})
    assert status == 200 and body["version"] == 2
    assert await rig.daemon.ask("pull_config") == {"applied": True}  # the config loop's next tick
    assert (await rig.daemon.ask("sell A1"))["total"] == 210

    command_id = await _command(rig, "set_price", {"sku_id": "cola", "price": 250})
    done = await until(lambda: _done(rig, command_id), what="set_price result")
    assert done["result_status"] == "ok"
    sold = await rig.daemon.ask("sell A1")
    assert sold["total"] == 250 and sold["lines"][0]["unit_price"] == 250
    totals = await until(lambda: _cloud_totals(rig, 3), what="orders in the cloud")
    assert totals == 180 + 210 + 250


async def _cloud_totals(rig: Rig, count: int) -> int | None:
    _, doc = await rig.admin("GET", "/orders")
    return doc["total"] if doc["count"] == count else None


async def test_invalid_catalog_is_refused_with_an_error_event_and_nothing_changes(rig: Rig) -> None:
    doc = load_demo_planogram()
    assert (await rig.admin("PUT", "/config", doc))[0] == 200  # v1
    doc["skus"][0]["price"] = 199.5  # float money: the machine must refuse the whole document
    assert (await rig.admin("PUT", "/config", doc))[0] == 400  # the admin API refuses it too…
    store = rig.app[STORE]
    version = await run_db(rig.app, store.put_config, MACHINE, doc)  # …so a buggy cloud stores it
    before = await rig.daemon.ask("sync_status")
    assert await rig.daemon.ask("pull_config") == {"applied": False}
    rows = rig.ledger_rows("SELECT severity, data FROM events WHERE kind='config_rejected'")
    assert len(rows) == 1 and rows[0][0] == "error"
    event = json.loads(rows[0][1])
    assert event["version"] == version and "price" in event["reason"]
    after = await rig.daemon.ask("sync_status")
    assert after["config_version"] == before["config_version"]
    assert (await rig.daemon.ask("sell A1"))["total"] == 180  # the old catalog still sells
    assert await rig.daemon.ask("pull_config") == {"applied": False}  # not re-applied, not re-logged
    assert len(rig.ledger_rows("SELECT 1 FROM events WHERE kind='config_rejected'")) == 1


# --- at most once -------------------------------------------------------------------------------
async def test_redelivered_and_replayed_vend_command_dispenses_once(rig: Rig) -> None:
    rig.mitm.drop_results = 1  # the machine's first answer is lost: the cloud delivers again
    command_id = await _command(rig, "vend", {"slot_id": "B2", "payment_ref": "cloud:refund-goodwill"})
    done = await until(lambda: _done(rig, command_id), what="vend result")
    assert done["deliveries"] >= 2 and done["result_status"] == "duplicate"
    assert done["result_detail"]["original_status"] == "ok"
    # a man in the middle replays the captured, genuinely signed command once the cloud is done
    captured = next(c for c in rig.mitm.seen if c["command_id"] == command_id)
    forwarded = len(rig.mitm.results)
    rig.mitm.inject.append(captured)
    await until(lambda: _answered(rig, forwarded + 1), what="replayed command answered")
    replay_id, replay_result = rig.mitm.results[-1]
    assert replay_id == command_id and replay_result["status"] == "duplicate"
    assert rig.sim_read(lambda: rig.sim.dispensed["B2"]) == 1
    assert rig.sim_read(lambda: rig.sim.counters["vends"]) == 1
    assert rig.ledger_rows("SELECT COUNT(*) FROM orders")[0][0] == 1
    assert rig.ledger_rows("SELECT status FROM commands WHERE command_id=?", (command_id,)) == [("ok",)]


async def _answered(rig: Rig, n: int) -> bool:
    return len(rig.mitm.results) >= n


# --- security -----------------------------------------------------------------------------------
def _forged(name: str, args: dict[str, Any], key: bytes) -> dict[str, Any]:
    cmd = {"command_id": uuid.uuid4().hex, "name": name, "args": args,
           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "expires_at": None}
    return dict(cmd, signature=signing.sign_command(key, cmd))


async def test_security_forged_open_session_and_vend_never_reach_the_machine(rig: Rig) -> None:
    genuine_id = await _command(rig, "lock_out_slot", {"slot_id": "C3", "locked": True})
    await until(lambda: _done(rig, genuine_id), what="genuine command")
    genuine = next(c for c in rig.mitm.seen if c["command_id"] == genuine_id)
    tampered = dict(genuine, command_id=uuid.uuid4().hex, name="vend", args={"slot_id": "A1"})
    forged = [
        _forged("open_session", {"door": "main", "limit": 5000}, b"guessed-secret"),
        _forged("vend", {"slot_id": "A1"}, b"guessed-secret"),
        dict(_forged("vend", {"slot_id": "A2"}, SECRET), signature=""),  # unsigned
        tampered,  # a genuine signature moved onto another command
    ]
    rig.mitm.inject.extend(forged)
    status = await until(lambda: _rejected(rig, 4), what="forged commands rejected")
    assert status["rejected_commands"] == 4
    assert rig.sim_read(lambda: rig.sim.total_dispensed) == 0
    assert rig.sim_read(lambda: rig.sim.vend_frames_received) == 0
    assert rig.sim_read(lambda: rig.sim.door_locked) is True
    assert rig.ledger_rows("SELECT COUNT(*) FROM orders")[0][0] == 0
    ids = [c["command_id"] for c in forged]
    assert rig.ledger_rows(f"SELECT command_id FROM commands WHERE command_id IN ({','.join('?' * 4)})",
                           tuple(ids)) == []
    # the genuine command did run (the channel works), and nobody without the admin token enqueues
    assert rig.ledger_rows("SELECT disabled FROM stock WHERE slot_id='C3'") == [(1,)]
    assert (await rig.admin("POST", "/commands", {"name": "vend", "args": {"slot_id": "A1"}},
                            headers={"Authorization": "Bearer wrong-token"}))[0] == 401
    assert len((await rig.admin("GET", "/commands"))[1]["commands"]) == 1


async def _rejected(rig: Rig, n: int) -> dict[str, Any] | None:
    status = await rig.daemon.ask("sync_status")
    return status if status["rejected_commands"] >= n else None


async def test_security_command_channel_refuses_bad_stale_replayed_and_unknown_requests(rig: Rig) -> None:
    """Without the machine's secret nobody can take a command, close it or report a fake result."""
    await rig.daemon.stop()  # the machine is offline: only the attacker talks to the cloud
    command_id = await _command(rig, "vend", {"slot_id": "A1"})
    poll = f"/v1/machines/{MACHINE}/commands?wait=0"
    result = f"/v1/machines/{MACHINE}/commands/{command_id}/result"
    fake = json.dumps({"status": "ok", "detail": {"order_id": "fake"}}).encode()
    now = time.time()

    async def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with rig.http.request(method, rig.cloud + path, data=body, headers=headers) as r:
            return r.status, await r.json()

    def signed(method: str, path: str, body: bytes = b"", *, key: bytes = SECRET,
               machine: str = MACHINE, at: float = now) -> dict[str, str]:
        return signing.request_headers(machine, key, method, path, body, now=at)

    valid_poll = signed("GET", poll)
    assert (await send("GET", poll, b"", valid_poll))[0] == 200  # a genuine poll, captured
    delivered = (await _cloud_command(rig, command_id))["deliveries"]
    cases = {
        "bad_signature": await send("POST", result, fake, signed("POST", result, key=b"wrong-secret-123456")),
        "stale_timestamp": await send("POST", result, fake, signed("POST", result, fake, at=now - 400)),
        "unknown_machine": await send("GET", poll.replace(MACHINE, "ghost"), b"",
                                      signed("GET", poll.replace(MACHINE, "ghost"), machine="ghost")),
        "bad_signature_poll": await send("GET", poll, b"", signed("GET", poll, key=b"wrong-secret-123456")),
        "replayed_nonce": await send("GET", poll, b"", valid_poll),
    }
    for name, (status, body) in cases.items():
        assert status == 401, name
        assert body["error"] == name.removesuffix("_poll"), name
    cmd = await _cloud_command(rig, command_id)
    assert cmd["state"] == "pending" and cmd["result_status"] is None  # no fake result recorded
    assert cmd["deliveries"] == delivered  # the refused polls took nothing
    assert rig.sim_read(lambda: rig.sim.total_dispensed) == 0


async def test_security_a_machine_with_the_wrong_secret_stores_nothing(tmp_path: pathlib.Path) -> None:
    async with _rig(tmp_path, b"not-the-registered-secret-99") as rig:
        sold = await rig.daemon.ask("sell A1")
        assert sold["status"] == "completed"  # offline-first: selling never waits for the cloud
        status = await until(lambda: _refused(rig), what="sync refused")
        assert "bad_signature" in status["last_error"] and not status["online"]
        _, records = await rig.admin("GET", "/records")
        assert records["total"] == 0
        assert (await rig.daemon.ask("backlog"))["backlog"] > 0  # kept until a right secret is set


async def _refused(rig: Rig) -> dict[str, Any] | None:
    status = await rig.daemon.ask("sync_status")
    return status if "bad_signature" in (status["last_error"] or "") else None

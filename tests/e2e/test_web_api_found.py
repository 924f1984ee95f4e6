"""Defects schemathesis found in /api/v1 (tests/e2e/test_web_api_schemathesis.py fuzzes it against
edge/web/openapi.yaml), each replayed here as the request it sent, against the real daemon on the
chilled-machine rig (vend board, Modbus fridge, shelves, door I/O) over real HTTP. Every row failed
before its fix; a refused request must also leave the ledger and the simulator alone."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from edge.clock import SystemClock
from edge.config import Secrets, WebConfig
from edge.daemon import Daemon
from edge.services.accounts import Accounts
from edge.web.app import bound_port, start_web
from hw_sim.vend_board import SimVendBoard
from tests.support.rigs.fridge import start_fridge_rig

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse battery"
USERS = (("tech", "technician"), ("screen", "kiosk"), ("view", "viewer"))


@dataclass
class Rig:
    """A rig's daemon with the web app on a loopback port; `base` ends in /api/v1."""

    daemon: Daemon
    board_sim: SimVendBoard
    base: str

    async def login(self, name: str) -> tuple[str, str]:
        """(session token, csrf) of a fresh session."""
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.post(f"{self.base}/login", json={"name": name, "password": PASSWORD}) as r:
                assert r.status == 200, await r.text()
                csrf = (await r.json())["csrf"]
                token = r.cookies["vendedge_session"].value
        return token, csrf

    async def call(self, token: str, method: str, path: str, body: Any = None,
                   csrf: str = "") -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        headers = {"X-CSRF-Token": csrf} if csrf else {}
        async with aiohttp.ClientSession(cookies={"vendedge_session": token}) as s:
            async with s.request(method, f"{self.base}{path}", json=body, headers=headers) as r:
                doc = await r.json() if r.content_type == "application/json" else await r.text()
                return r.status, doc, r.headers

    async def moved(self) -> dict[str, Any]:
        """What a refused request must leave alone."""
        db = self.daemon.db
        out: dict[str, Any] = {t: (await db.fetchone(f"SELECT COUNT(*) AS n FROM {t}"))["n"]
                               for t in ("orders", "vend_journal", "lockouts")}
        out["stock"] = (await db.fetchone("SELECT SUM(count) AS n FROM stock"))["n"]
        out["dispensed"] = self.board_sim.total_dispensed
        return out


@contextlib.asynccontextmanager
async def serve(daemon: Daemon, board_sim: SimVendBoard) -> AsyncIterator[Rig]:
    """The web app of a started rig's daemon, with a technician, a kiosk and a viewer account."""
    users = Accounts(daemon.machine.db)
    for name, role in USERS:
        await users.add(name, role, PASSWORD)
    # sessions on wall time: the fridge rig's ledger clock runs 2000x, so a 12 h session would end mid-run
    runner = await start_web(daemon.machine, WebConfig(host="127.0.0.1", port=0), Secrets(),
                             session_clock=SystemClock())
    try:
        yield Rig(daemon, board_sim, f"http://127.0.0.1:{bound_port(runner)}/api/v1")
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(tmp_path: pathlib.Path) -> AsyncIterator[Rig]:
    """The chilled-machine rig: every optional technician service is there."""
    rig = await start_fridge_rig(str(tmp_path / "rig"))
    try:
        async with serve(rig.daemon, rig.board_sim) as w:
            yield w
    finally:
        await rig.stop()


async def test_an_undeclared_method_is_a_405_that_names_the_allowed_ones(api: Rig) -> None:
    token, _ = await api.login("tech")
    status, doc, headers = await api.call(token, "TRACE", "/status")
    assert status == 405 and doc["error"] == "method_not_allowed"
    assert headers.get("Allow") == "GET,HEAD"  # RFC 9110: a 405 says what the path takes
    status, _, headers = await api.call(token, "PUT", "/kiosk/sell")
    assert status == 405 and headers.get("Allow") == "POST"


# (path, body, error code): each a body schemathesis sent that was answered with a 409 or a 200
BAD_BODIES = [
    ("/devices/test-vend", {"slot_id": "", "confirm": True}, "bad_request"),  # was 409 unknown_slot
    ("/devices/test-vend", {"slot_id": "A 1", "confirm": True}, "bad_request"),
    ("/devices/tare", {"shelf": -1, "confirm": True}, "bad_request"),  # was 409 device_error (KeyError)
    ("/devices/tare", {"shelf": True, "confirm": True}, "bad_request"),  # a bool is not a shelf index
    ("/devices/tare", {"shelf": 99, "confirm": True}, "bad_input"),  # not a shelf of this machine
    ("/devices/read-registers", {"device": "fridge", "confirm": True}, "bad_input"),  # was 501 not_available
    ("/stock/restock", {"slot_id": "A1", "count": 0, "confirm": {}}, "bad_request"),  # was 200
    ("/stock/restock", {"slot_id": "A1", "count": 0, "best_before": ""}, "bad_request"),  # was 200
    ("/stock/restock", {"slot_id": "", "count": 1}, "bad_request"),
]


@pytest.mark.parametrize(("path", "body", "code"), BAD_BODIES)
async def test_a_body_that_breaks_the_schema_is_a_400_and_moves_nothing(api: Rig, path: str, body: Any,
                                                                         code: str) -> None:
    token, csrf = await api.login("tech")
    before = await api.moved()
    status, doc, _ = await api.call(token, "POST", path, body, csrf)
    assert (status, doc["error"]) == (400, code), doc
    assert doc["detail"]
    assert await api.moved() == before


async def test_a_days_value_that_is_not_ascii_digits_is_a_400_not_a_500(api: Rig) -> None:
    token, _ = await api.login("view")
    for days in ("²", "١٢", "0", "401", "7"):
        status, doc, _ = await api.call(token, "GET", f"/haccp?days={days}")
        assert status == (200 if days == "7" else 400), (days, doc)
        assert status == 200 or doc["error"] == "bad_request"


async def test_json_nested_deeper_than_the_parser_goes_is_a_400_not_a_500(api: Rig) -> None:
    token, csrf = await api.login("tech")
    deep = "[" * 30_000 + "]" * 30_000  # under the 64 KiB body limit; json.loads raises RecursionError
    before = await api.moved()
    async with aiohttp.ClientSession(cookies={"vendedge_session": token}) as s:
        for path in ("/kiosk/sell", "/stock/restock", "/devices/unlock", "/login"):
            async with s.post(f"{api.base}{path}", data=deep,
                              headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"}) as r:
                doc = await r.json()
                assert (r.status, doc["error"]) == (400, "bad_request"), (path, r.status, doc)
    assert await api.moved() == before

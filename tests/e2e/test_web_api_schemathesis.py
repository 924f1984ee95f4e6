"""Schemathesis 4.32.5 (its CLI, in a subprocess, as tests/e2e/test_refcloud_schemathesis.py runs it) fuzzes
the daemon's own /api/v1 against edge/web/openapi.yaml: the real daemon on the chilled-machine rig (vend
board, Modbus fridge, shelves and door I/O simulated at the wire, real SQLite), the web app on 127.0.0.1,
logged in as a technician, a kiosk and a viewer in turn. Every response must be a non-5xx that the file
documents (status, content type, body schema); bodies that break the schema must be refused with a 4xx
(a 409 or 501 is not a refusal of a bad body); an undocumented method must be a 405 with `Allow`.

Goods and money: the fuzzer may sell and test-vend, but every well-formed slot it names is pinned to one
sacrificial slot (the hooks below), so it cannot empty the machine or spread vends over it; malformed
slots reach the server as generated (they must be 400s). Logging out is fuzzed last, on its own session.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from tests.e2e.test_web_api_found import Rig, serve
from tests.support.rigs.fridge import start_fridge_rig
from tests.support.rigs.vend import start_rig

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "edge/web/openapi.yaml"
SACRIFICE = "A1"  # the only slot a fuzzed sale or test vend may turn
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "negative_data_rejection,unsupported_method")
# 501 `not_available` is a documented answer (a service this machine lacks), not a server error; a body or
# parameter that breaks the schema is refused as such: not a 409 (the machine refused a valid request), never
# a 5xx other than 501 (an action whose service this machine lacks answers before it reads the body)
CONFIG = """
[auth.openapi.session]
api_key = "${VENDEDGE_ST_SESSION}"
[auth.openapi.csrf]
api_key = "${VENDEDGE_ST_CSRF}"
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", 501]
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 413, 415, 421, 501]
"""
# per operation and phase; a deeper hunt: VENDEDGE_WEB_FUZZ_EXAMPLES=50
EXAMPLES = int(os.environ.get("VENDEDGE_WEB_FUZZ_EXAMPLES", "8"))
pytestmark = pytest.mark.timeout(120 + 10 * EXAMPLES)

if os.environ.get("VENDEDGE_ST_WEB_HOOKS"):  # only inside the schemathesis subprocess
    import schemathesis

    from edge.web.api import SLOT_ID

    GOODS = {"/kiosk/sell": "slot", "/devices/test-vend": "slot_id"}

    @schemathesis.hook
    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        """Pin every well-formed slot of a sale or test vend to the sacrificial slot."""
        field = GOODS.get(case.path)
        body = case.body
        if field and isinstance(body, dict) and isinstance(body.get(field), str) and SLOT_ID.fullmatch(body[field]):
            body[field] = SACRIFICE


async def run_schemathesis(w: Rig, user: str, tmp: pathlib.Path, *extra: str,
                           max_examples: int) -> tuple[str, str]:
    """Fuzz as `user` on a fresh session; (the report, the session token it used)."""
    token, csrf = await w.login(user)
    work = tmp / f"st-{user}-{len(extra)}"
    work.mkdir()
    (work / "schemathesis.toml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENDEDGE_ST_")}
    env.update(PYTHONPATH=str(ROOT), SCHEMATHESIS_HOOKS="tests.e2e.test_web_api_schemathesis", NO_COLOR="1",
               VENDEDGE_ST_WEB_HOOKS="1", VENDEDGE_ST_SESSION=token, VENDEDGE_ST_CSRF=csrf)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "run", str(SCHEMA), "--url", w.base,
        "--checks", CHECKS, "--max-examples", str(max_examples), "--seed", "7", "--workers", "1",
        "--request-timeout", "10", "--suppress-health-check", "all", *extra,
        cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60 + 15 * max_examples)
    text = out.decode(errors="replace")
    (work / "schemathesis.txt").write_text(text)  # the whole report, beside the run's config
    assert proc.returncode == 0, text[-8000:]
    assert " passed" in text, text[-3000:]
    return text, token


def turned(w: Rig) -> set[str]:
    """The slots whose spiral the simulated board turned."""
    return {slot for slot, n in w.board_sim.dispensed.items() if n}


NOT_LOGOUT = ("--exclude-operation-id", "logout")


async def test_technician_fuzzing_finds_no_server_error_and_conforms(api: Rig, tmp_path: pathlib.Path) -> None:
    text, token = await run_schemathesis(api, "tech", tmp_path, *NOT_LOGOUT, max_examples=EXAMPLES)
    assert "Tested: 25" in text  # every operation but logout
    # sales and test vends went through, and only ever from the sacrificial slot
    assert turned(api) == {SACRIFICE}, api.board_sim.dispensed
    status, doc, _ = await api.call(token, "GET", "/status")
    assert status == 200 and doc["machine_id"]  # the daemon is still serving, the session still valid


# the viewer and the kiosk each on a rig of their own (one test each, so two workers can take them at once)
async def test_viewer_fuzzing_gets_documented_refusals_and_moves_nothing(api: Rig, tmp_path: pathlib.Path) -> None:
    before = await api.moved()
    text, _ = await run_schemathesis(api, "view", tmp_path, *NOT_LOGOUT, max_examples=max(1, EXAMPLES // 3))
    assert "Tested: 25" in text
    assert await api.moved() == before  # a viewer moved nothing: no order, no stock, no spiral


async def test_kiosk_fuzzing_gets_documented_refusals_and_only_sells(api: Rig, tmp_path: pathlib.Path) -> None:
    text, _ = await run_schemathesis(api, "screen", tmp_path, *NOT_LOGOUT, max_examples=max(1, EXAMPLES // 3))
    assert "Tested: 25" in text
    assert turned(api) <= {SACRIFICE}, api.board_sim.dispensed  # a kiosk may only sell


async def test_logout_fuzzing_ends_the_session_it_was_given(api: Rig, tmp_path: pathlib.Path) -> None:
    text, token = await run_schemathesis(api, "view", tmp_path, "--include-operation-id", "logout",
                                         max_examples=3)
    assert "Tested: 1" in text
    status, doc, _ = await api.call(token, "GET", "/me")
    assert (status, doc["error"]) == (401, "login_required")


@pytest.fixture
async def api(tmp_path: pathlib.Path) -> AsyncIterator[Rig]:
    """The chilled-machine rig (every optional technician service is there) at 200x instead of the rig's
    2000x, polled every 0.3 s instead of 0.03 s: the same 60 simulated seconds between polls, and a tenth
    of the CPU the daemon spent polling while the fuzzer ran (0.06 instead of 0.42 of a core)."""
    rig = await start_fridge_rig(str(tmp_path / "rig"), speed=200.0, poll_s=0.3)
    try:
        async with serve(rig.daemon, rig.board_sim) as w:
            yield w
    finally:
        await rig.stop()


@pytest.fixture
async def vend_api(tmp_path: pathlib.Path) -> AsyncIterator[Rig]:
    """The plain vend rig: a vend board (its door latch takes at most 65535 ms) and no fridge, shelves or
    take-and-go, so the technician's other actions answer 501."""
    rig = await start_rig(str(tmp_path / "rig"), speed=200.0)
    try:
        async with serve(rig.daemon, rig.sim) as w:
            yield w
    finally:
        await rig.stop()


async def test_technician_fuzzing_of_the_plain_vend_machine(vend_api: Rig, tmp_path: pathlib.Path) -> None:
    text, _ = await run_schemathesis(vend_api, "tech", tmp_path, *NOT_LOGOUT, "--include-method", "POST",
                                     max_examples=max(1, EXAMPLES // 2))
    assert "Tested: 10" in text  # every POST but logout
    assert turned(vend_api) <= {SACRIFICE}, vend_api.board_sim.dispensed


async def test_the_reference_is_served_to_a_viewer_and_not_to_a_kiosk(api: Rig) -> None:
    token, _ = await api.login("view")
    status, text, headers = await api.call(token, "GET", "/openapi.yaml")
    assert status == 200 and headers["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(text) == yaml.safe_load(SCHEMA.read_text())
    token, _ = await api.login("screen")
    status, doc, _ = await api.call(token, "GET", "/openapi.yaml")
    assert (status, doc["error"]) == (403, "forbidden")

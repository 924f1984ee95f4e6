"""Schemathesis 4.32.5 (its CLI, in a subprocess) fuzzes a live reference cloud on 127.0.0.1
against sync/openapi.yaml, unsigned and HMAC-signed (tests/support/schemathesis_hooks.py signs
per docs/protocols/sync.md). Every response must be a non-5xx that the schema documents (status,
content type, body schema), and unsupported methods must get 405."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sync.refcloud import serve

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "admin-token-for-schemathesis"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,unsupported_method")
MAX_EXAMPLES = 12
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def cloud(tmp_path: pathlib.Path) -> AsyncIterator[tuple[str, bytes, aiohttp.ClientSession]]:
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(f"{base}/admin/machines", json={"machine_id": "m1"}) as r:
                secret = bytes.fromhex((await r.json())["secret_hex"])
            # a published config and a pending command, so 200 answers get checked too
            doc = json.loads((ROOT / "hw_sim/data/demo_planogram.json").read_text())
            async with http.put(f"{base}/admin/machines/m1/config", json=doc) as r:
                assert r.status == 200
            async with http.post(f"{base}/admin/machines/m1/commands",
                                 json={"name": "set_setpoint", "args": {"setpoint_c": 4}}) as r:
                assert r.status == 201
            yield base, secret, http
    finally:
        await runner.cleanup()


async def run_schemathesis(base: str, env_extra: dict[str, str], tmp: pathlib.Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENDEDGE_ST_")}
    env.update(PYTHONPATH=str(ROOT), SCHEMATHESIS_HOOKS="tests.support.schemathesis_hooks", NO_COLOR="1",
               **env_extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "run", str(ROOT / "sync/openapi.yaml"), "--url", base,
        "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", "7", "--workers", "1",
        "--request-timeout", "10", "--report", "junit", "--report-dir", str(tmp),
        cwd=tmp, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 100)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    return text


async def deliveries(base: str, http: aiohttp.ClientSession) -> int:
    async with http.get(f"{base}/admin/machines/m1/commands") as r:
        return sum(c["deliveries"] for c in (await r.json())["commands"])


async def test_unsigned_fuzzing_finds_no_server_error_and_conforms(cloud, tmp_path: pathlib.Path) -> None:
    base, _secret, http = cloud
    text = await run_schemathesis(base, {}, tmp_path)
    assert "Tested: 4" in text and " passed" in text
    # unsigned requests never got past the signature check
    assert await deliveries(base, http) == 0


async def test_signed_fuzzing_finds_no_server_error_and_conforms(cloud, tmp_path: pathlib.Path) -> None:
    base, secret, http = cloud
    text = await run_schemathesis(base, {"VENDEDGE_ST_MACHINE": "m1", "VENDEDGE_ST_SECRET_HEX": secret.hex()},
                                  tmp_path)
    assert "Tested: 4" in text and " passed" in text
    # signed requests reached the handlers: the pending command was delivered
    assert await deliveries(base, http) > 0

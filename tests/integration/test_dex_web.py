"""DEX download over real HTTP against the daemon + simulated board; the cloud's protocol accepts the record."""

from __future__ import annotations

import aiohttp
import pytest

from edge.config import Secrets, WebConfig
from edge.ledger.outbox import LedgerOutbox
from edge.services.accounts import Accounts
from edge.services.dex import DexService
from edge.web.app import bound_port, start_web
from sync.protocol import parse_record, record_to_wire
from sync.refcloud import serve
from tests.integration import test_sync_client as sc
from tests.integration.test_dex import Read, check
from tests.integration.test_sync_client import TOKEN
from tests.support.rigs.vend import start_rig

pytestmark = pytest.mark.timeout(60)
PASSWORD = "correct horse battery"


@pytest.fixture
async def web(tmp_path):
    rig = await start_rig(str(tmp_path), speed=200.0)
    users = Accounts(rig.daemon.machine.db)
    await users.add("tech", "technician", PASSWORD)
    await users.add("view", "viewer", PASSWORD)
    runner = await start_web(rig.daemon.machine, WebConfig(host="127.0.0.1", port=0), Secrets())
    yield rig, f"http://127.0.0.1:{bound_port(runner)}"
    await runner.cleanup()
    await rig.stop()


async def login(base: str, name: str) -> tuple[aiohttp.ClientSession, str]:
    s = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await s.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert r.status == 200
    return s, (await r.json())["csrf"]


async def test_download_interim_by_technician_only_and_cloud_accepts_it(web):
    rig, base = web
    db = rig.daemon.db
    for slot in sorted(rig.sim.stock)[:4]:
        await rig.daemon.machine.sell(slot, "card")
    s, csrf = await login(base, "view")
    async with s:
        r = await s.get("/dex.txt")
        assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
        await check(db, Read(await r.text(), 1, "all"))
        r = await s.post("/dex/interim", data={"csrf": csrf, "confirm": "yes"}, allow_redirects=False)
        assert r.status == 403
    assert (await db.fetchone("SELECT COUNT(*) AS c FROM dex_read_orders"))["c"] == 0
    s, csrf = await login(base, "tech")
    async with s:
        r = await s.post("/dex/interim", data={"csrf": csrf}, allow_redirects=False)
        assert r.status == 400  # not confirmed: nothing reset
        assert (await db.fetchone("SELECT COUNT(*) AS c FROM dex_reads WHERE kind='interim'"))["c"] == 0
        r = await s.post("/dex/interim", data={"csrf": csrf, "confirm": "yes"}, allow_redirects=False)
        assert r.status == 200
        row = await db.fetchone("SELECT read_id FROM dex_reads WHERE kind='interim'")
        await check(db, Read(await r.text(), row["read_id"], "interim"))
    assert (await db.fetchone("SELECT COUNT(*) AS c FROM dex_read_orders"))["c"] == 4
    batch = [rec for rec in await LedgerOutbox(db).fetch_batch(500, 10**7) if rec.kind == "dex_read"]
    assert [rec.payload["kind"] for rec in batch] == ["all", "interim"]
    for rec in batch:
        assert parse_record(record_to_wire(rec)).kind == "dex_read"


async def test_reads_reach_the_reference_cloud(web, tmp_path):
    """The ledger's own outbox pushed by the real SyncClient to the real refcloud: every DEX read is stored."""
    rig, _ = web
    db = rig.daemon.db
    await rig.daemon.machine.sell(sorted(rig.sim.stock)[0], "card")
    service = DexService.for_machine(db, "m1", "EUR")
    ids = [(await service.read(interim=flag)).record_id for flag in (False, True)]
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            cloud = sc.Cloud(runner.addresses[0][1], http, b"")
            _, made = await cloud.admin("POST", "/admin/machines", {"machine_id": "m1"})
            outbox = LedgerOutbox(db)
            async with sc.SyncClient(base, "m1", bytes.fromhex(made["secret_hex"]), outbox, sc.MemoryConfig(),
                                     sc.MemoryCommands(), backoff_base_s=0.01, backoff_max_s=0.05, poll_wait_s=0,
                                     request_timeout_s=3) as sync:
                while await sync.push_once():
                    pass
            assert await outbox.parked() == 0
            stored = set(await cloud.record_ids())
            assert set(ids) <= stored and all(i.startswith("dex-read-") for i in ids)
    finally:
        await runner.cleanup()

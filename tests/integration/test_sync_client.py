"""SyncClient against the real reference cloud over loopback: push through a flaky network, parking,
config with ETag and refusal, command inbox with at-most-once and forged commands, clock skew."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.core.catalog import Planogram
from edge.core.errors import ConfigError, SyncError
from edge.core.ports import Command, CommandResult, OutboxRecord
from sync import signing
from sync.client import SyncClient
from sync.refcloud import serve
from tests.support.flaky_proxy import FlakyProxy
from tests.support.waits import wait_for

TOKEN = "admin-token-for-tests"
ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = json.loads((ROOT / "hw_sim/data/demo_planogram.json").read_text())
pytestmark = pytest.mark.timeout(60)


# --- the ledger's side of the ports, in memory (the lead swaps the real ledger in for e2e) -------
class MemoryOutbox:
    def __init__(self, records: list[OutboxRecord] = ()) -> None:
        self.pending: dict[str, OutboxRecord] = {}
        self.parked: dict[str, str] = {}
        self.acked: list[str] = []
        self.add(*records)

    def add(self, *records: OutboxRecord) -> None:
        for r in records:
            self.pending[r.record_id] = r

    async def fetch_batch(self, limit: int, max_bytes: int) -> list[OutboxRecord]:
        out, size = [], 0
        for r in sorted(self.pending.values(), key=lambda r: (r.priority, r.seq)):
            size += len(json.dumps(dict(r.payload))) + 150
            if len(out) >= limit or (out and size > max_bytes):
                break
            out.append(r)
        return out

    async def ack(self, record_ids: list[str]) -> None:
        for rid in record_ids:
            if self.pending.pop(rid, None) is not None:
                self.acked.append(rid)

    async def park(self, record_id: str, reason: str) -> None:
        self.pending.pop(record_id, None)
        self.parked[record_id] = reason

    async def backlog(self) -> int:
        return len(self.pending)


class MemoryConfig:
    """Refuses what the machine cannot do: a fridge setpoint above 8 °C."""

    def __init__(self) -> None:
        self.version, self.doc = 0, None
        self.applied: list[int] = []
        self.rejected: list[tuple[int, str]] = []

    async def current_version(self) -> int:
        return self.version

    async def apply_config(self, version: int, doc: Mapping[str, Any]) -> None:
        Planogram.from_doc(doc)
        if doc.get("settings", {}).get("setpoint_c", 4) > 8:
            raise ValueError("settings.setpoint_c above 8 °C is unsafe for perishables")
        self.version, self.doc = version, doc
        self.applied.append(version)

    async def config_rejected(self, version: int, reason: str) -> None:
        self.rejected.append((version, reason))


class MemoryCommands:
    def __init__(self) -> None:
        self.results: dict[str, CommandResult] = {}
        self.applied: list[Command] = []
        self.on_apply = None

    async def handle(self, command: Command) -> CommandResult:
        if command.command_id in self.results:
            return CommandResult(command.command_id, "duplicate", self.results[command.command_id].detail)
        self.applied.append(command)
        result = CommandResult(command.command_id, "ok", {"applied": command.name})
        self.results[command.command_id] = result
        if self.on_apply:
            self.on_apply()
        return result


def make_records(n: int, start: int = 0) -> list[OutboxRecord]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for i in range(start, start + n):
        if i % 4 == 0:
            payload = {"order_id": f"o-{i}", "lines": [{"sku_id": "cola", "qty": 1, "unit_price": 180}],
                       "total": 180, "currency": "EUR"}
            out.append(OutboxRecord(f"rec-{i}", i, "order", now, payload, priority=0))
        else:
            out.append(OutboxRecord(f"rec-{i}", i, "telemetry", now, {"t_c": 4.0 + i % 3, "pad": "x" * 40},
                                    priority=5))
    return out


# --- fixtures --------------------------------------------------------------------------------------
class Cloud:
    def __init__(self, port: int, http: aiohttp.ClientSession, secret: bytes) -> None:
        self.port, self.http, self.secret = port, http, secret
        self.base = f"http://127.0.0.1:{port}"

    async def admin(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return r.status, await r.json()

    async def record_ids(self) -> list[str]:
        return (await self.admin("GET", "/admin/machines/m1/record_ids"))[1]["record_ids"]


@pytest.fixture
async def cloud(tmp_path: pathlib.Path) -> AsyncIterator[Cloud]:
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN)
    try:
        async with aiohttp.ClientSession() as http:
            port = runner.addresses[0][1]
            async with http.post(f"http://127.0.0.1:{port}/admin/machines", json={"machine_id": "m1"},
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                secret = bytes.fromhex((await r.json())["secret_hex"])
            yield Cloud(port, http, secret)
    finally:
        await runner.cleanup()


def client(base: str, secret: bytes, outbox: MemoryOutbox | None = None, *, config: MemoryConfig | None = None,
           commands: MemoryCommands | None = None, **kw: Any) -> SyncClient:
    opts = dict(backoff_base_s=0.01, backoff_max_s=0.05, poll_wait_s=0, request_timeout_s=3)
    opts.update(kw)
    return SyncClient(base, "m1", secret, outbox or MemoryOutbox(), config or MemoryConfig(),
                      commands or MemoryCommands(), **opts)


async def until(predicate: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


# --- outbox push ---------------------------------------------------------------------------------
async def test_1000_records_through_a_flaky_network_arrive_exactly_once(cloud: Cloud) -> None:
    outbox = MemoryOutbox(make_records(1000))
    async with FlakyProxy("127.0.0.1", cloud.port, seed=1234, drop_rate=0.12, cut_rate=0.12,
                          delay_rate=0.2, max_delay_s=0.02) as proxy:
        sync = client(f"http://127.0.0.1:{proxy.port}", cloud.secret, outbox, batch_max_records=40,
                      gzip_min_bytes=512, config_interval_s=30)
        task = asyncio.create_task(sync.run())
        try:
            await until(lambda: _empty(outbox), timeout=40)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    ids = await cloud.record_ids()
    assert len(ids) == 1000 and set(ids) == {f"rec-{i}" for i in range(1000)}
    assert len(outbox.acked) == 1000 and not outbox.parked
    orders = (await cloud.admin("GET", "/admin/machines/m1/orders"))[1]
    assert orders["count"] == 250 and orders["total"] == 250 * 180
    # the network really was bad: requests were dropped and answers cut after the cloud stored them
    assert proxy.stats.dropped >= 3 and proxy.stats.cut >= 3
    assert sync.status["pushed_total"] >= 1000 and sync.status["backlog"] == 0


async def _empty(outbox: MemoryOutbox) -> bool:
    return await outbox.backlog() == 0


async def test_invalid_record_is_parked_and_does_not_block_the_rest(cloud: Cloud) -> None:
    records = make_records(8)
    bad = OutboxRecord("rec-bad", 0, "order", records[0].created_at,
                       {"order_id": "o-bad", "lines": [], "total": 1.8}, priority=0)
    outbox = MemoryOutbox([bad, *records])
    async with client(cloud.base, cloud.secret, outbox) as sync:
        assert await sync.push_once() == 9
        assert await sync.push_once() == 0
        assert "bad_money" in outbox.parked["rec-bad"]
        assert sync.status["parked_total"] == 1 and sync.status["backlog"] == 0
    assert sorted(await cloud.record_ids()) == sorted(r.record_id for r in records)


async def test_notify_wakes_an_idle_push_loop(cloud: Cloud) -> None:
    outbox = MemoryOutbox(make_records(3))
    sync = client(cloud.base, cloud.secret, outbox, idle_push_s=30, config_interval_s=30)
    task = asyncio.create_task(sync.run())
    try:
        await until(lambda: _empty(outbox), timeout=5)
        await asyncio.sleep(0.1)  # the scenario: the push loop is parked in its 30 s idle wait
        outbox.add(*make_records(2, start=100))
        t0 = time.monotonic()
        sync.notify()
        await until(lambda: _empty(outbox), timeout=5)
        assert time.monotonic() - t0 < 5  # not the 30 s idle interval (bound generous for load)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(await cloud.record_ids()) == 5 and sync.status["online"]


async def test_wrong_secret_is_refused_and_nothing_is_stored(cloud: Cloud) -> None:
    outbox = MemoryOutbox(make_records(5))
    async with client(cloud.base, b"not-the-machine-secret", outbox) as sync:
        with pytest.raises(SyncError, match="bad_signature"):
            await sync.push_once()
    assert await cloud.record_ids() == [] and await outbox.backlog() == 5


async def test_clock_skew_is_learnt_from_the_cloud_and_push_succeeds(cloud: Cloud) -> None:
    outbox = MemoryOutbox(make_records(10))
    async with client(cloud.base, cloud.secret, outbox, wall=lambda: time.time() - 3 * 3600) as sync:
        assert await sync.push_once() == 10
        assert abs(sync.status["clock_offset_s"] - 3 * 3600) < 5
        assert await sync.poll_commands_once() == 0  # later requests use the learnt offset
    assert len(await cloud.record_ids()) == 10


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match="sync.base_url"):
        SyncClient("http://cloud.example.com", "m1", b"s", MemoryOutbox(), MemoryConfig(), MemoryCommands())


# --- config ------------------------------------------------------------------------------------
async def test_config_pull_uses_etag_and_keeps_the_old_config_when_refused(cloud: Cloud) -> None:
    config = MemoryConfig()
    async with client(cloud.base, cloud.secret, config=config) as sync:
        assert await sync.pull_config_once() is False  # nothing published yet (404)
        await cloud.admin("PUT", "/admin/machines/m1/config", DEMO)
        assert await sync.pull_config_once() is True
        assert config.applied == [1] and config.doc["skus"][0]["sku_id"] == "cola"
        assert await sync.pull_config_once() is False and config.applied == [1]  # 304

        assert (await cloud.admin("PUT", "/admin/machines/m1/settings", {"setpoint_c": 12}))[0] == 200
        assert await sync.pull_config_once() is False
        assert await sync.pull_config_once() is False  # refused version is not re-applied in a loop
        assert [v for v, _ in config.rejected] == [2] and "unsafe" in config.rejected[0][1]
        assert config.version == 1 and sync.status["config_version"] == 1

        await cloud.admin("PUT", "/admin/machines/m1/settings", {"setpoint_c": 4})
        assert await sync.pull_config_once() is True
        assert config.applied == [1, 3] and config.doc["settings"] == {"setpoint_c": 4}
        assert sync.status["config_version"] == 3


# --- commands ----------------------------------------------------------------------------------
async def test_command_is_redelivered_until_result_posted_and_applied_once(cloud: Cloud) -> None:
    commands = MemoryCommands()
    _, doc = await cloud.admin("POST", "/admin/machines/m1/commands",
                               {"name": "vend", "args": {"slot": "A3"}, "ttl_s": 600})
    async with FlakyProxy("127.0.0.1", cloud.port, seed=1) as proxy:
        def network_dies() -> None:  # the command is applied, then the uplink dies before the result
            proxy.drop_rate = 1.0

        commands.on_apply = network_dies
        async with client(f"http://127.0.0.1:{proxy.port}", cloud.secret, commands=commands) as sync:
            with pytest.raises(SyncError):
                await sync.poll_commands_once()
            listed = (await cloud.admin("GET", "/admin/machines/m1/commands"))[1]["commands"]
            assert listed[0]["state"] == "pending"
            proxy.drop_rate = 0.0
            assert await sync.poll_commands_once() == 1  # delivered again
            assert await sync.poll_commands_once() == 0  # result recorded: no more
    assert [c.name for c in commands.applied] == ["vend"]  # applied at most once
    listed = (await cloud.admin("GET", "/admin/machines/m1/commands"))[1]["commands"]
    assert listed[0]["command_id"] == doc["command_id"] and listed[0]["state"] == "done"
    assert listed[0]["deliveries"] == 2 and listed[0]["result_status"] == "duplicate"


@pytest.fixture
async def tampering_proxy(cloud: Cloud) -> AsyncIterator[str]:
    """A man in the middle: changes the args of `set_price` commands and injects a forged unlock."""

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.startswith("X-") or k == "If-None-Match"}
        async with cloud.http.request(request.method, cloud.base + request.path_qs,
                                      data=await request.read(), headers=headers) as r:
            body = await r.read()
            if request.path.endswith("/commands") and r.status == 200:
                doc = json.loads(body)
                for c in doc["commands"]:
                    if c["name"] == "set_price":
                        c["args"]["price"] = 1
                forged = {"command_id": uuid.uuid4().hex, "name": "unlock", "args": {"door": "main"},
                          "issued_at": "2024-01-01T00:00:00Z", "expires_at": None}
                doc["commands"].append(dict(forged, signature=signing.sign_command(b"guess", forged)))
                body = json.dumps(doc).encode()
            return web.Response(status=r.status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_forged_or_modified_commands_never_reach_the_sink(cloud: Cloud, tampering_proxy: str) -> None:
    commands = MemoryCommands()
    _, price = await cloud.admin("POST", "/admin/machines/m1/commands",
                                 {"name": "set_price", "args": {"sku_id": "cola", "price": 190}})
    _, vend = await cloud.admin("POST", "/admin/machines/m1/commands", {"name": "vend", "args": {"slot": "A1"}})
    async with client(tampering_proxy, cloud.secret, commands=commands) as sync:
        assert await sync.poll_commands_once() == 3
        assert sync.status["rejected_commands"] == 2
    assert [(c.command_id, c.name) for c in commands.applied] == [(vend["command_id"], "vend")]
    listed = {c["command_id"]: c for c in (await cloud.admin("GET", "/admin/machines/m1/commands"))[1]["commands"]}
    assert listed[price["command_id"]]["result_status"] == "rejected"
    assert listed[price["command_id"]]["result_detail"] == {"reason": "bad_signature"}
    assert listed[vend["command_id"]]["result_status"] == "ok"


# --- TLS with a pinned CA ------------------------------------------------------------------------
def _make_ca_and_server_cert(tmp: pathlib.Path) -> tuple[str, str, str]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    srv = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
           .public_key(srv_key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(hours=1))
           .not_valid_after(now + dt.timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                          critical=False)
           .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = tmp / "ca.pem", tmp / "srv.pem", tmp / "srv.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(srv.public_bytes(pem))
    paths[2].write_bytes(srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


async def test_https_with_pinned_ca_works_and_an_unknown_ca_is_refused(tmp_path: pathlib.Path) -> None:
    import ssl

    ca_file, cert, key = _make_ca_and_server_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = await serve("127.0.0.1", 0, str(tmp_path / "cloud.db"), TOKEN, ssl_context=ctx)
    try:
        base = f"https://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/admin/machines", json={"machine_id": "m1"}, ssl=ssl.create_default_context(
                    cafile=ca_file), headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                secret = bytes.fromhex((await r.json())["secret_hex"])
        outbox = MemoryOutbox(make_records(5))
        async with client(base, secret, outbox) as untrusting:  # system CAs only: must refuse
            with pytest.raises(SyncError, match="ertificate"):
                await untrusting.push_once()
        assert await outbox.backlog() == 5
        async with client(base, secret, outbox, ca_file=ca_file) as pinned:
            assert await pinned.push_once() == 5
        assert await outbox.backlog() == 0
    finally:
        await runner.cleanup()


async def test_push_resumes_within_a_second_or_two_after_an_outage(cloud: Cloud) -> None:
    """A record queued while the network is down reaches the cloud soon after it returns: loops that
    backed off wake as soon as any loop finds the link up (production backoff, not the test's)."""
    async with FlakyProxy("127.0.0.1", cloud.port) as proxy:
        outbox = MemoryOutbox()
        sync = client(f"http://127.0.0.1:{proxy.port}", cloud.secret, outbox, backoff_base_s=0.5,
                      backoff_max_s=60, poll_wait_s=1)
        task = asyncio.create_task(sync.run())
        try:
            await wait_for(lambda: sync.status["online"], 5.0, what="the link up before the outage")
            proxy.drop_rate = 1.0
            outbox.add(*make_records(1))
            sync.notify()
            await asyncio.sleep(5)  # time is the subject: the push loop's backoff grows past 4 s
            assert not await cloud.record_ids()
            proxy.drop_rate = 0.0
            t0 = time.monotonic()
            await until(lambda: _empty(outbox), timeout=30)
            # the push loop's own backoff is past 4 s by now: arriving sooner means the wake worked
            # (3.9 s, not less: a loaded CI box took 3.1 s for the poll loop to see the link back)
            assert time.monotonic() - t0 < 3.9
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert len(await cloud.record_ids()) == 1

"""The MQTT 5 transport against Debian's Mosquitto on loopback, with the password and ACL files
`vendedge refcloud mqtt-acl` writes, and the reference cloud's MQTT workers (docs/protocols/mqtt.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest

from edge.core.ports import OutboxRecord
from sync import signing
from sync.client import SyncClient
from sync.transport import mqtt_wire as wire
from sync.transport.mqtt import MqttTransport
from tests.integration.test_sync_client import MemoryCommands, MemoryConfig, MemoryOutbox
from tests.support.mqtt_rig import CLOUD_PASSWORD, MqttRig, mqtt_rig, needs_mosquitto, until

pytestmark = [needs_mosquitto, pytest.mark.timeout(60)]
ROOT = pathlib.Path(__file__).resolve().parents[2]
SECRETS = {"m1": b"m1-secret-0123456789abcdef", "m2": b"m2-secret-0123456789abcdef"}
NOW = datetime.now(UTC).isoformat(timespec="seconds")


def orders(machine: str, n: int, start: int = 0) -> list[OutboxRecord]:
    return [
        OutboxRecord(
            f"{machine}-r{i}",
            i + 1,
            "order",
            NOW,
            {
                "order_id": f"{machine}-o{i}",
                "currency": "EUR",
                "total": 150,
                "lines": [{"sku_id": "cola", "qty": 1, "unit_price": 150}],
            },
            priority=0,
        )
        for i in range(start, start + n)
    ]


@contextlib.asynccontextmanager
async def machine(
    rig: MqttRig, machine_id: str, outbox: Any = None, config: Any = None, sink: Any = None, **kw: Any
) -> AsyncIterator[SyncClient]:
    transport = MqttTransport(rig.broker.url, machine_id, rig.secrets[machine_id], request_timeout_s=5, **kw)
    client = SyncClient(
        "",
        machine_id,
        rig.secrets[machine_id],
        outbox or MemoryOutbox([]),
        config or MemoryConfig(),
        sink or MemoryCommands(),
        batch_max_records=100,
        poll_wait_s=1,
        backoff_base_s=0.1,
        backoff_max_s=1,
        config_interval_s=30,
        transport=transport,
    )
    task = asyncio.create_task(client.run(), name=f"test.machine.{machine_id}")
    try:
        assert await until(lambda: _connected(transport), 10), "machine never connected"
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _connected(t: MqttTransport) -> bool:
    return t.connected


def raw(rig: MqttRig, user: str, password: str | None = None, **kw: Any) -> aiomqtt.Client:
    pw = (
        password
        if password is not None
        else (CLOUD_PASSWORD if user == wire.CLOUD_USER else wire.machine_password(rig.secrets[user]))
    )
    return aiomqtt.Client(
        "127.0.0.1",
        rig.broker.port,
        username=user,
        password=pw,
        identifier=f"raw-{user}-{time.monotonic_ns()}",
        protocol=aiomqtt.ProtocolVersion.V5,
        **kw,
    )


async def test_records_pass_once_with_per_record_acks_and_invalid_ones_are_parked(
    tmp_path: pathlib.Path,
) -> None:
    async with mqtt_rig(tmp_path, SECRETS) as rig:
        records = orders("m1", 250)
        bad = OutboxRecord(
            "m1-bad", 999, "order", NOW, {"order_id": "x", "total": 1.5, "lines": []}, priority=0
        )
        outbox = MemoryOutbox([*records, bad])
        async with machine(rig, "m1", outbox) as client:
            client.notify()
            assert await until(lambda: _drained(outbox), 15), client.status
            assert client.status["online"] and client.status["transport"] == "mqtt"
        assert outbox.parked == {"m1-bad": "bad_money: total must be integer minor units"}
        assert (await rig.get("m1", "orders"))["count"] == 250
        # a machine that lost its acks (power cut) sends everything again: no second effect
        again = MemoryOutbox(orders("m1", 250))
        async with machine(rig, "m1", again) as client:
            client.notify()
            assert await until(lambda: _drained(again), 15)
        assert (await rig.get("m1", "orders"))["count"] == 250
        assert (await rig.get("m1", "records"))["total"] == 250
        assert rig.cloud.stats["records"] == 501  # 251 acked, then 250 again (as duplicates)


async def _drained(outbox: MemoryOutbox) -> bool:
    return not outbox.pending


async def test_a_machine_cannot_read_or_write_another_machines_topics(tmp_path: pathlib.Path) -> None:
    async with mqtt_rig(tmp_path, SECRETS) as rig:
        got: list[str] = []
        async with raw(rig, "m1") as spy, raw(rig, "m2") as owner:
            for filt in (
                "vendedge/m/m2/cmd",
                "vendedge/m/m2/config",
                "vendedge/m/m2/ack",
                "vendedge/m/+/cmd",
                "vendedge/#",
            ):
                await spy.subscribe(filt, qos=1)
            await owner.subscribe("vendedge/m/m2/cmd", qos=1)
            # m1 writes as if it were m2: a batch into m2's outbox and an "offline" into m2's status
            batch = wire.encode_batch("forged1", orders("m2", 3), 0)
            await spy.publish("vendedge/m/m2/outbox", batch, qos=1)
            await spy.publish("vendedge/m/m2/status", wire.encode_status("offline"), qos=1, retain=True)
            status, body = await rig.admin(
                "POST", "/admin/machines/m2/commands", {"name": "ping", "args": {}}
            )
            assert status == 201, body

            async def owner_got_it() -> bool:
                msg = await asyncio.wait_for(anext(owner.messages), 5)
                return str(msg.topic) == "vendedge/m/m2/cmd"

            assert await owner_got_it()  # the ACL lets the owner read its own commands

            async def spy_reads() -> None:
                async for msg in spy.messages:
                    got.append(str(msg.topic))

            reader = asyncio.create_task(spy_reads())
            await asyncio.sleep(1.0)  # the observation window: whatever m1 could read of m2's has come by now
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        assert got == []  # nothing of m2's (nor anyone's) reached m1
        assert (await rig.get("m2", "records"))["total"] == 0
        assert 'class="link offline"' not in await rig.fleet_page()
        with pytest.raises(aiomqtt.MqttError):  # and a wrong password does not get in at all
            async with raw(rig, "m1", password="not-the-password"):
                pass


async def test_a_forged_command_never_reaches_the_sink(tmp_path: pathlib.Path) -> None:
    async with mqtt_rig(tmp_path, SECRETS) as rig:
        sink = MemoryCommands()
        async with machine(rig, "m1", sink=sink) as client, raw(rig, wire.CLOUD_USER) as intruder:
            base = {
                "command_id": "f1",
                "name": "vend",
                "args": {"slot": "A1"},
                "issued_at": NOW,
                "expires_at": None,
            }
            other_key = dict(base, signature=signing.sign_command(SECRETS["m2"], base))
            unsigned = dict(base, command_id="f2")
            genuine_f3 = dict(base, command_id="f3")
            moved = dict(
                genuine_f3, args={"slot": "B9"}, signature=signing.sign_command(SECRETS["m1"], genuine_f3)
            )
            for forged in (other_key, unsigned, moved):
                await intruder.publish("vendedge/m/m1/cmd", json.dumps(forged), qos=1)
            status, body = await rig.admin(
                "POST", "/admin/machines/m1/commands", {"name": "ping", "args": {"n": 1}}
            )
            assert status == 201
            assert await until(lambda: _results(rig, "m1", body["command_id"]), 10)
            assert await until(lambda: _rejected(client, 3), 5), client.status
        assert [c.name for c in sink.applied] == ["ping"] and sink.applied[0].args == {"n": 1}


async def _results(rig: MqttRig, machine_id: str, command_id: str) -> bool:
    cmds = (await rig.get(machine_id, "commands"))["commands"]
    return any(c["command_id"] == command_id and c["result_status"] in ("ok", "duplicate") for c in cmds)


async def _rejected(client: SyncClient, n: int) -> bool:
    return bool(client.status["rejected_commands"] == n)


async def test_config_is_retained_versioned_and_an_older_retained_config_is_ignored(
    tmp_path: pathlib.Path, planogram_doc: dict[str, Any]
) -> None:
    async with mqtt_rig(tmp_path, SECRETS) as rig:
        for _ in range(2):
            status, _ = await rig.admin("PUT", "/admin/machines/m1/config", planogram_doc)
            assert status == 200
        config = MemoryConfig()
        async with machine(rig, "m1", config=config):  # connects after the publish: the retained copy
            assert await until(lambda: _version(config, 2), 10), config.applied
            async with raw(rig, wire.CLOUD_USER) as stale:  # a broker restored from an old snapshot
                await stale.publish(
                    "vendedge/m/m1/config", wire.encode_config(1, planogram_doc), qos=1, retain=True
                )
            await asyncio.sleep(0.5)  # the observation window: the stale retained v1 reaches the machine
            status, _ = await rig.admin("PUT", "/admin/machines/m1/config", planogram_doc)
            assert await until(lambda: _version(config, 3), 10), config.applied
        # never backwards (the stale v1 was ignored); v1 may come first if its retained copy was still there
        assert config.applied[-2:] == [2, 3] and config.applied == sorted(set(config.applied))


async def _version(config: MemoryConfig, v: int) -> bool:
    return config.version == v


# Mosquitto 2.0 sweeps keep-alives only every ~5 s (a fixed 5 s check interval in its main loop),
# so a machine that goes silent without closing its socket (frozen, cable cut) is declared dead
# up to that much later than 1.5 x keep-alive; a killed process's socket closes at once.
KEEPALIVE_SWEEP_S = 7  # 5 s between sweeps, whole seconds, plus the loop's own wake-up


@pytest.mark.parametrize(("how", "slack_s"), [("sigkill", 0), ("frozen", KEEPALIVE_SWEEP_S)])
async def test_last_will_marks_a_vanished_machine_offline_on_the_fleet_page(
    tmp_path: pathlib.Path, how: str, slack_s: float
) -> None:
    keepalive = 2
    async with mqtt_rig(tmp_path, SECRETS) as rig:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.mqtt_rig",
            rig.broker.url,
            "m2",
            SECRETS["m2"].hex(),
            str(keepalive),
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            while (await asyncio.wait_for(proc.stdout.readline(), 15)).strip() != b"up":
                pass  # its log lines
            assert await until(lambda: _link(rig, "online"), 5)
            await asyncio.sleep(keepalive)  # the link idles on pings for a while
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGSTOP)
            assert await until(lambda: _link(rig, "offline"), 1.5 * keepalive + slack_s + 2, 0.1)
            elapsed = time.monotonic() - t0
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        print(f"\n{how}: offline on the fleet page after {elapsed:.2f} s (keep-alive {keepalive} s)")
        assert elapsed <= 1.5 * keepalive + slack_s, f"offline after {elapsed:.2f} s, keepalive {keepalive} s"


async def _link(rig: MqttRig, state: str) -> bool:
    return 'data-machine="m2"' in (page := await rig.fleet_page()) and f'class="link {state}"' in page


async def test_refcloud_mqtt_acl_writes_files_mosquitto_accepts(tmp_path: pathlib.Path) -> None:
    from edge.cli import main as cli_main  # noqa: PLC0415
    from sync.refcloud.store import Store  # noqa: PLC0415
    from sync.transport.mosquitto import Broker  # noqa: PLC0415

    store = Store(str(tmp_path / "cloud.db"))
    store.register_machine("m1", SECRETS["m1"], time.time())
    store.close()
    out = tmp_path / "auth"
    args = ["refcloud", "mqtt-acl", "--db", str(tmp_path / "cloud.db"), "--out", str(out)]
    assert cli_main([*args, "--cloud-password", CLOUD_PASSWORD]) == 0
    assert (out / "passwd").stat().st_mode & 0o777 == 0o600
    assert [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()] == ["m1", "refcloud"]
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", out / "passwd", out / "acl")
    await asyncio.to_thread(broker.start)
    try:
        for user, password in (("m1", wire.machine_password(SECRETS["m1"])), ("refcloud", CLOUD_PASSWORD)):
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                username=user,
                password=password,
                protocol=aiomqtt.ProtocolVersion.V5,
            ) as c:
                await c.publish(f"vendedge/m/{user}/status", wire.encode_status("online"), qos=1)
        with pytest.raises(aiomqtt.MqttError):  # m2 is not registered in the cloud: no login
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                username="m2",
                password=wire.machine_password(SECRETS["m2"]),
                protocol=aiomqtt.ProtocolVersion.V5,
            ):
                pass
    finally:
        await asyncio.to_thread(broker.stop)


async def test_mqtts_with_a_pinned_ca_syncs_and_an_unknown_ca_never_connects(tmp_path: pathlib.Path) -> None:
    from tests.integration.test_sync_client import _make_ca_and_server_cert  # noqa: PLC0415

    ca_file, cert, key = _make_ca_and_server_cert(tmp_path)
    async with mqtt_rig(tmp_path, SECRETS, tls=(ca_file, cert, key)) as rig:
        assert rig.broker.url.startswith("mqtts://")
        untrusting = MqttTransport(rig.broker.url, "m1", SECRETS["m1"], backoff_max_s=0.5)  # system CAs only
        link = asyncio.create_task(untrusting.run())
        await asyncio.sleep(1.5)  # the observation window: several attempts (backoff <= 0.5 s), none connects
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        assert untrusting.connects == 0
        outbox = MemoryOutbox(orders("m1", 20))
        async with machine(rig, "m1", outbox, ca_file=ca_file) as client:
            client.notify()
            assert await until(lambda: _drained(outbox), 10), client.status
        assert (await rig.get("m1", "orders"))["count"] == 20


async def test_a_command_for_an_offline_machine_survives_a_broker_crash_and_is_applied_once(
    tmp_path: pathlib.Path,
) -> None:
    async with mqtt_rig(tmp_path, SECRETS) as rig:
        sink = MemoryCommands()
        async with machine(rig, "m1", sink=sink):
            pass  # connected once: the broker holds a persistent session for m1, then m1 goes away
        status, body = await rig.admin("POST", "/admin/machines/m1/commands", {"name": "ping", "args": {}})
        assert status == 201
        await asyncio.sleep(0.3)  # published into m1's session (the broker acknowledges nothing to wait on) ...
        await rig.restart_broker(kill=True)  # ... which the crashed broker never saved
        # the birth makes the cloud publish it again; a result the broker drops before the ingest
        # workers re-subscribed is answered by the next re-delivery (rig: every 2 s)
        async with machine(rig, "m1", sink=sink) as client:
            assert await until(lambda: _results(rig, "m1", body["command_id"]), 15), client.status
        assert [c.command_id for c in sink.applied] == [body["command_id"]]

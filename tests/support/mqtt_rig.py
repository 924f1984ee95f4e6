"""A Mosquitto broker on loopback (password + ACL files written the way `vendedge refcloud
mqtt-acl` writes them) and the reference cloud serving it, for the MQTT tests."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sync.refcloud.mqtt_acl import passwords
from sync.refcloud.mqtt_ingest import MQTT_CLOUD, MqttCloud, MqttCloudSettings
from sync.refcloud.server import serve
from sync.refcloud.store import Store
from sync.transport.mosquitto import Broker, mosquitto_binary, write_auth_files

TOKEN = "mqtt-admin-token"
CLOUD_PASSWORD = "cloud-broker-password-0001"
needs_mosquitto = pytest.mark.skipif(
    mosquitto_binary() is None, reason="mosquitto not installed (make sysdeps)"
)


@dataclass
class MqttRig:
    broker: Broker
    runner: web.AppRunner
    base: str
    db: str
    secrets: Mapping[str, bytes]
    http: aiohttp.ClientSession
    log: list[str] = field(default_factory=list)

    @property
    def cloud(self) -> MqttCloud:
        cloud = self.runner.app[MQTT_CLOUD]
        assert isinstance(cloud, MqttCloud)
        return cloud

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with asyncio.timeout(10):
            async with self.http.request(
                method, f"{self.base}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as r:
                return r.status, await r.json(
                    content_type=None
                ) if r.content_type == "application/json" else await r.text()

    async def get(self, machine_id: str, what: str) -> Any:
        status, body = await self.admin("GET", f"/admin/machines/{machine_id}/{what}")
        assert status == 200, (what, body)
        return body

    async def fleet_page(self) -> str:
        async with self.http.get(f"{self.base}/fleet", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
            return await r.text()

    async def restart_broker(self, *, kill: bool = False) -> None:
        await asyncio.to_thread(self.broker.restart, kill=kill)

    async def broker_stop(self, *, kill: bool = False) -> None:
        await asyncio.to_thread(self.broker.stop, kill=kill)

    async def broker_start(self) -> None:
        await asyncio.to_thread(self.broker.start)


@contextlib.asynccontextmanager
async def mqtt_rig(
    tmp_path: pathlib.Path,
    secrets: Mapping[str, bytes],
    *,
    workers: int = 1,
    tls: tuple[str, str, str] | None = None,
) -> AsyncIterator[MqttRig]:
    """Broker + refcloud (HTTP admin on a free port, MQTT workers) with these machines registered."""
    db = str(tmp_path / "cloud.db")
    store = Store(db)
    try:
        for machine_id, secret in secrets.items():
            store.register_machine(machine_id, secret, time.time())
    finally:
        store.close()
    passwd, acl = write_auth_files(tmp_path / "mqtt-auth", passwords(db, CLOUD_PASSWORD), "vendedge")
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", passwd, acl, tls=tls)
    await asyncio.to_thread(broker.start)
    runner = None
    try:
        runner = await serve(
            "127.0.0.1",
            0,
            db,
            TOKEN,
            mqtt=MqttCloudSettings(
                broker.url, CLOUD_PASSWORD, workers=workers, ca_file=tls[0] if tls else None, redeliver_s=2.0
            ),
        )
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            yield MqttRig(broker, runner, base, db, secrets, http)
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(broker.stop)


async def until(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll an async predicate until it is true (True) or the time is up (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step_s)
    return False


async def _machine(url: str, machine_id: str, secret_hex: str, keepalive: int) -> None:
    """A bare machine link (no daemon): `python -m tests.support.mqtt_rig URL ID SECRET KEEPALIVE`
    prints `up` once its birth is published, then holds the link until killed."""
    from sync.transport.mqtt import MqttTransport  # noqa: PLC0415

    transport = MqttTransport(url, machine_id, bytes.fromhex(secret_hex), keepalive_s=keepalive)
    task = asyncio.create_task(transport.run())
    while transport.connects == 0:
        await asyncio.sleep(0.02)
    print("up", flush=True)
    await task


if __name__ == "__main__":
    import sys

    asyncio.run(_machine(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))

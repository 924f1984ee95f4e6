"""The reference cloud as a subprocess (`vendedge refcloud`), its admin API (docs/protocols/sync.md),
and a local Mosquitto for `--transport mqtt` with the files `vendedge refcloud mqtt-acl` writes."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import pathlib
import secrets
import shutil
from dataclasses import dataclass
from typing import Any

import aiohttp

from hw_sim.rigs.config import free_port, sync_config
from hw_sim.rigs.daemon import (
    RigError,
    log_tail,
    spawn_logged,
    stop_process,
    vendedge,
    vendedge_argv,
    wait_http_ok,
)

MOSQUITTO_HINT = ("--transport mqtt needs a local broker. Mosquitto is not installed: "
                  "`sudo apt-get install -y mosquitto` (Debian/Ubuntu), then run this again.")


class CloudProcess:
    """`vendedge refcloud --db STATE/refcloud.sqlite3 --port P` on 127.0.0.1; the admin token is passed
    in the environment (not on the command line, where `ps` shows it)."""

    def __init__(self, state_dir: pathlib.Path, admin_token: str, *, mqtt_url: str = "",
                 mqtt_password: str = "") -> None:
        self.db = state_dir / "refcloud.sqlite3"
        self.log_path = state_dir / "refcloud.log"
        self.admin_token = admin_token
        self.mqtt_url, self.mqtt_password = mqtt_url, mqtt_password
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 30.0) -> CloudProcess:
        self.port = free_port()
        argv = vendedge_argv("refcloud", "--db", str(self.db), "--host", "127.0.0.1", "--port", str(self.port))
        env = {"VENDEDGE_ADMIN_TOKEN": self.admin_token}
        if self.mqtt_url:
            argv += ["--mqtt-url", self.mqtt_url, "--mqtt-workers", "1"]
            env["VENDEDGE_MQTT_PASSWORD"] = self.mqtt_password
        self.proc = await spawn_logged(argv, self.log_path, env)
        try:
            await wait_http_ok(f"{self.url}/admin/machines", timeout_s,
                               alive=lambda: self.proc is not None and self.proc.returncode is None,
                               headers=self._auth())
        except RigError as exc:
            await self.stop()
            raise RigError(f"reference cloud did not start ({exc}):\n{log_tail(self.log_path)}") from None
        return self

    async def stop(self, timeout_s: float = 10.0) -> None:
        await stop_process(self.proc, timeout_s)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        """One admin call; the parsed JSON answer (RigError on an error status)."""
        async with aiohttp.ClientSession(headers=self._auth(), timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.request(method, self.url + path, json=body) as resp:
                doc = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise RigError(f"cloud {method} {path}: {resp.status} {doc}")
                return doc

    async def register(self, machine_id: str, secret_hex: str, planogram: dict[str, Any]) -> None:
        """The machine with its shared secret, and its catalog + planogram as the current config."""
        await self.admin("POST", "/admin/machines", {"machine_id": machine_id, "secret_hex": secret_hex})
        await self.admin("PUT", f"/admin/machines/{machine_id}/config", planogram)

    async def issue_token(self, machine_id: str, customer_ref: str, limit: int) -> str:
        """A signed offline token (what a customer's app shows as a QR code)."""
        doc = await self.admin("POST", f"/admin/machines/{machine_id}/tokens",
                               {"customer_ref": customer_ref, "limit": limit})
        return str(doc["token"])

    async def command(self, machine_id: str, name: str, args: dict[str, Any], ttl_s: float = 60) -> str:
        doc = await self.admin("POST", f"/admin/machines/{machine_id}/commands",
                               {"name": name, "args": args, "ttl_s": ttl_s})
        return str(doc["command_id"])


def mosquitto_binary() -> str | None:
    """Debian puts the broker in /usr/sbin, often not on a user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


class MosquittoProcess:
    """Mosquitto on 127.0.0.1 with the password and ACL files of `vendedge refcloud mqtt-acl` (which
    reads the machines registered in the cloud's database)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self, cloud_db: pathlib.Path, cloud_password: str, timeout_s: float = 10.0) -> MosquittoProcess:
        binary = mosquitto_binary()
        if binary is None:
            raise RigError(MOSQUITTO_HINT)
        auth, broker = self.root / "auth", self.root / "broker"
        broker.mkdir(parents=True, exist_ok=True)
        await vendedge("refcloud", "mqtt-acl", "--db", str(cloud_db), "--out", str(auth),
                       "--cloud-password", cloud_password)
        self.port = free_port()
        conf = broker / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", "allow_anonymous false", f"password_file {auth / 'passwd'}",
            f"acl_file {auth / 'acl'}", "persistence false", "set_tcp_nodelay true", f"user {getpass.getuser()}",
            f"log_dest file {broker / 'mosquitto.log'}", "log_type error", "log_type warning", ""]))
        self.proc = await asyncio.create_subprocess_exec(binary, "-c", str(conf), stdin=asyncio.subprocess.DEVNULL,
                                                         stdout=asyncio.subprocess.DEVNULL,
                                                         stderr=asyncio.subprocess.DEVNULL)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            if self.proc.returncode is not None:
                raise RigError(f"mosquitto exited {self.proc.returncode}: {log_tail(broker / 'mosquitto.log')}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return self
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise RigError(f"mosquitto did not listen on {self.port} in {timeout_s} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await stop_process(self.proc, 10.0)


def mqtt_sync_lines(broker_url: str) -> str:
    """Appended to the `[sync]` table: the same link, over the broker (docs/protocols/mqtt.md)."""
    return f'transport = "mqtt"\n\n[sync.mqtt]\nurl = "{broker_url}"\nkeepalive_s = 15\n'


@dataclass
class CloudLink:
    """The reference cloud the machine syncs with, and the broker when the link is MQTT."""

    cloud: CloudProcess
    broker: MosquittoProcess | None = None

    def sync_config(self) -> str:
        """The machine's `[sync]` section (plus `[sync.mqtt]` over the broker)."""
        lines = sync_config(self.cloud.url)
        return lines + mqtt_sync_lines(self.broker.url) if self.broker is not None else lines

    async def stop(self) -> None:
        await self.cloud.stop()
        if self.broker is not None:
            await self.broker.stop()


async def start_cloud(root: pathlib.Path, admin_token: str, machine_id: str, secret_hex: str,
                      planogram: dict[str, Any], *, mqtt: bool = False) -> CloudLink:
    """The reference cloud with this machine and its planogram registered. With `mqtt`, a local
    Mosquitto whose logins `vendedge refcloud mqtt-acl` writes from the cloud's database, and the cloud
    started again as that broker's client."""
    link = CloudLink(CloudProcess(root, admin_token))
    try:
        await link.cloud.start()
        await link.cloud.register(machine_id, secret_hex, planogram)
        if mqtt:
            password = secrets.token_urlsafe(18)
            await link.cloud.stop()
            link.broker = await MosquittoProcess(root / "mqtt").start(link.cloud.db, password)
            link.cloud = await CloudProcess(root, admin_token, mqtt_url=link.broker.url,
                                            mqtt_password=password).start()
    except BaseException:
        await link.stop()
        raise
    return link

"""The reference cloud (`sync.refcloud`) in this process, with one machine registered and its planogram."""

from __future__ import annotations

import os
from typing import Any

import aiohttp

from hw_sim.world import load_demo_planogram
from sync.refcloud.server import serve as serve_cloud

ADMIN = "/admin/machines"


async def start_cloud(state_dir: str, admin_token: str, secret_hex: str, machine_id: str,
                      mqtt: Any = None) -> tuple[Any, int]:
    """The reference cloud on a free loopback port, with this machine registered and its planogram
    (and, with `mqtt` settings, its MQTT workers on that broker); returns (runner, port)."""
    runner = await serve_cloud("127.0.0.1", 0, os.path.join(state_dir, "refcloud.sqlite3"), admin_token,
                               mqtt=mqtt)
    port = int(runner.addresses[0][1])
    base = f"http://127.0.0.1:{port}{ADMIN}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin_token}"}) as http:
        async with http.post(base, json={"machine_id": machine_id, "secret_hex": secret_hex}) as r:
            r.raise_for_status()
        async with http.put(f"{base}/{machine_id}/config", json=load_demo_planogram()) as r:
            r.raise_for_status()
    return runner, port


def sync_config(state_dir: str, port: int, secret_hex: str, *, poll_wait_s: float = 5) -> str:
    """A `[sync]` section for the cloud on `port`; writes the machine secret to a 0600 file."""
    secrets_file = os.path.join(state_dir, "secrets.toml")
    with open(os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f'machine_secret = "{secret_hex}"\n')
    return f"""
[sync]
enabled = true
url = "http://127.0.0.1:{port}"
poll_wait_s = {poll_wait_s}
"""

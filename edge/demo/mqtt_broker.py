"""`vendedge demo --transport mqtt`: a local Mosquitto on loopback with the password and ACL files
`vendedge refcloud mqtt-acl` would write, the cloud's MQTT settings, and the machine's `[sync]`
lines (docs/protocols/mqtt.md)."""

from __future__ import annotations

import pathlib
import secrets

from sync.refcloud.mqtt_ingest import MqttCloudSettings
from sync.transport import mqtt_wire as wire
from sync.transport.mosquitto import INSTALL_HINT, Broker, mosquitto_binary, write_auth_files


def missing_mosquitto() -> str:
    """'' when Mosquitto is installed, else how to install it."""
    return "" if mosquitto_binary() else f"--transport mqtt needs a local broker. {INSTALL_HINT}"


def start_broker(state_dir: str, machine_id: str, secret_hex: str) -> tuple[Broker, MqttCloudSettings]:
    """Mosquitto on a free loopback port with logins for this machine and the cloud."""
    root = pathlib.Path(state_dir) / "mqtt"
    cloud_password = secrets.token_urlsafe(18)
    users = {machine_id: wire.machine_password(bytes.fromhex(secret_hex)), wire.CLOUD_USER: cloud_password}
    passwd, acl = write_auth_files(root / "auth", users, wire.DEFAULT_PREFIX)
    (root / "broker").mkdir(parents=True, exist_ok=True)
    broker = Broker(root / "broker", passwd, acl).start()
    return broker, MqttCloudSettings(broker.url, cloud_password, workers=1)


def sync_lines(broker_url: str) -> str:
    """Appended to the `[sync]` table the HTTPS demo writes: the same link, over the broker."""
    return f'transport = "mqtt"\n\n[sync.mqtt]\nurl = "{broker_url}"\nkeepalive_s = 15\n'

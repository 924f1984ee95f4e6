"""The TOML the daemon reads, written from plain strings (hw_sim never imports edge.config).

The keys are the daemon's documented ones (docs/configuration.md, systemd/vendedge.toml.example);
`vendedge check-config` validates what these functions write.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
from typing import Any

from hw_sim.world import load_demo_planogram

MACHINE_ID = "demo-0001"  # the id every config written here carries


def spiral_stock(planogram: dict[str, Any] | None = None) -> dict[str, int]:
    """Spiral slots (no fridge shelf) at capacity: what a filled vend board holds."""
    doc = planogram or load_demo_planogram()
    return {s["slot_id"]: s["capacity"] for s in doc["slots"] if s.get("shelf") is None}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for a subprocess that must be told its port)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_config(state_dir: pathlib.Path, *, board_port: str, extra: str = "",
                 web_port: int | None = None, secrets_file: str = "", log_level: str = "warning",
                 log_format: str = "auto") -> pathlib.Path:
    """`state_dir/vendedge.toml` for machine demo-0001: the demo planogram (seeded on first start),
    the vend board at `board_port`, the web server on `web_port` (None: off), then `extra` sections."""
    planogram = state_dir / "planogram.json"
    if not planogram.exists():
        planogram.write_text(json.dumps(load_demo_planogram()))
    cfg = state_dir / "vendedge.toml"
    cfg.write_text(f"""
[machine]
id = "{MACHINE_ID}"
data_dir = "{state_dir / 'data'}"
planogram_file = "{planogram}"
secrets_file = "{secrets_file}"

[logging]
level = "{log_level}"
format = "{log_format}"

[vend_board]
port = "{board_port}"
reply_timeout_s = 0.3
retries = 3
vend_timeout_s = 10
jam_disable_after = 3

[web]
enabled = {'true' if web_port is not None else 'false'}
port = {web_port or 0}
{extra}
""")
    return cfg


def write_secrets(state_dir: pathlib.Path, **values: str) -> pathlib.Path:
    """`state_dir/secrets.toml` (mode 0600, as the daemon requires): machine_secret, metrics_token."""
    path = state_dir / "secrets.toml"
    text = "".join(f'{k} = "{v}"\n' for k, v in values.items() if v)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        f.write(text)
    return path


def plant_config(link: str, *, poll_s: float, restock_grace_s: float = 3600, timeout_s: float = 0.05,
                 extra: str = "") -> str:
    """Config sections for the Modbus bus (fridge controller, weight shelves, I/O module), the
    I/O-module door and demo temperature limits."""
    dev = f'poll_interval_s = {poll_s}\noffline_after = 3'
    return f"""
[door]
source = "io_module"
unlock_ms = 8000
open_too_long_s = 300

[temperature]
setpoint_c = 4.0
high_alarm_c = 6.0
high_alarm_delay_s = 600
low_alarm_c = -1.0
hysteresis_c = 1.0
food_safety_limit_c = 5.0
food_safety_max_s = 1800
restock_grace_s = {restock_grace_s}

[modbus.bus0]
serial_port = "{link}"
timeout_s = {timeout_s}
retries = 0
gap_ms = 0

[modbus.bus0.devices.fridge]
unit_id = 1
map = "fridge_controller"
role = "fridge"
{dev}

[modbus.bus0.devices.shelves]
unit_id = 2
map = "weight_shelf"
role = "weight_shelves"
{dev}

[modbus.bus0.devices.io]
unit_id = 3
map = "io_module"
role = "io"
{dev}
{extra}
"""


def simulation_config(time_scale: float, origin_unix: float, start_wall: float) -> str:
    """`[simulation]`: the daemon's clock runs `time_scale` x real time from `origin_unix`, its wall
    clock reading `start_wall` there. The simulators use the same origin (SimClock(origin_unix=...))."""
    return f"""
[simulation]
time_scale = {time_scale}
origin_unix = {origin_unix!r}
start_wall = {start_wall!r}
"""


def sync_config(url: str, *, poll_wait_s: float = 5) -> str:
    """`[sync]` over HTTPS to the reference cloud at `url` (the machine secret is in secrets.toml)."""
    return f"""
[sync]
enabled = true
url = "{url}"
poll_wait_s = {poll_wait_s}
"""

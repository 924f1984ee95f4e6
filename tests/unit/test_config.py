import os

import pytest

from edge.config import load_config, load_secrets
from edge.core.errors import ConfigError

GOOD = """
[machine]
id = "vm-0001"
data_dir = "/tmp/x"
[vend_board]
port = "/dev/ttyUSB0"
[modbus.bus0]
serial_port = "/dev/ttyRS485"
[modbus.bus0.devices.fridge]
unit_id = 1
map = "fridge_controller"
role = "fridge"
"""


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_good_config_builds_typed_objects(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.machine.id == "vm-0001"
    assert cfg.vend_board.baudrate == 57600
    assert cfg.modbus["bus0"].devices["fridge"].unit_id == 1
    assert cfg.door.source == "vend_board"
    assert cfg.temperature.food_safety_limit_c == 5.0


@pytest.mark.parametrize("patch, key, allowed", [
    (("baudrate", "[vend_board]\nport = \"/dev/ttyUSB0\"\nbaudrate = 5"), "vend_board.baudrate", "from 1200"),
    (("unknown", "[vend_board]\nport = \"x\"\nspeed = 5"), "vend_board.speed", "one of"),
    (("type", "[vend_board]\nport = 7"), "vend_board.port", "a string"),
    (("choice", "[vend_board]\nport = \"x\"\n[door]\nsource = \"modbus\""), "door.source", "vend_board"),
])
def test_bad_values_name_key_value_and_allowed(tmp_path, patch, key, allowed):
    text = "[machine]\nid = \"vm-1\"\n" + patch[1]
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert err.value.key == key
    assert allowed in str(err.value)


def test_missing_required_and_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="machine.id"):
        load_config(write(tmp_path, "[machine]\n[vend_board]\nport='x'\n"))
    with pytest.raises(ConfigError, match="valid TOML"):
        load_config(write(tmp_path, "[machine\n"))


def test_secrets_must_be_owner_only(tmp_path):
    p = tmp_path / "secrets.toml"
    p.write_text('machine_secret = "s3cret"\n')
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_secrets(p)
    os.chmod(p, 0o600)
    assert load_secrets(p).machine_secret == "s3cret"


def test_shipped_example_config_is_valid():
    import pathlib

    example = pathlib.Path(__file__).resolve().parents[2] / "systemd" / "vendedge.toml.example"
    cfg = load_config(example)
    assert cfg.machine.id == "vm-0001" and cfg.door.source == "io_module"
    assert cfg.cameras["shelf0"].rows == 6 and not cfg.takeandgo.enabled

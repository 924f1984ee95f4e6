"""`sync.transport = "mqtt"` and `[sync.mqtt]` are checked where `vendedge check-config` and
`vendedge run` both check them (edge.config.load_all), and the MQTT wire shapes are pure."""

from __future__ import annotations

import base64
import hashlib
import pathlib

import pytest

from edge.cli import main as cli_main
from edge.config import load_all
from edge.core.errors import ConfigError
from sync.transport import mqtt_wire as wire

SECRET = "00112233445566778899aabbccddeeff"


def _write(tmp_path: pathlib.Path, sync: str) -> pathlib.Path:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'machine_secret = "{SECRET}"\n')
    secrets.chmod(0o600)
    cfg = tmp_path / "vendedge.toml"
    cfg.write_text(f"""
[machine]
id = "m-1"
secrets_file = "{secrets}"
[vend_board]
port = "/dev/null"
[sync]
enabled = true
{sync}
""")
    return cfg


@pytest.mark.parametrize(
    ("sync", "key", "fragment"),
    [
        ('transport = "mqtt"', "sync.mqtt.url", "mqtts://host"),
        (
            'transport = "mqtt"\n[sync.mqtt]\nurl = "mqtt://broker.example.com"',
            "sync.mqtt.url",
            "only on loopback",
        ),
        ('transport = "mqtt"\n[sync.mqtt]\nurl = "https://broker.example.com"', "sync.mqtt.url", "mqtts://"),
        ('transport = "amqp"', "sync.transport", "'https', 'mqtt'"),
        (
            'transport = "mqtt"\n[sync.mqtt]\nurl = "mqtts://b:8883"\nkeepalive_s = 2',
            "sync.mqtt.keepalive_s",
            "5",
        ),
        ('transport = "mqtt"\n[sync.mqtt]\nurl = "mqtts://b:8883"\nqos = 2', "sync.mqtt.qos", "one of"),
    ],
)
def test_bad_mqtt_settings_are_refused_naming_the_key_by_check_config_and_run_alike(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], sync: str, key: str, fragment: str
) -> None:
    cfg = _write(tmp_path, sync)
    with pytest.raises(ConfigError) as exc:
        load_all(cfg)
    assert exc.value.key == key and fragment in str(exc.value)
    assert cli_main(["check-config", "--config", str(cfg)]) == 2
    assert key in capsys.readouterr().err


def test_mqtt_over_tls_or_on_loopback_is_accepted_and_https_stays_the_default(tmp_path: pathlib.Path) -> None:
    cfg, _ = load_all(
        _write(tmp_path, 'transport = "mqtt"\n[sync.mqtt]\nurl = "mqtts://broker.example.com:8883"')
    )
    assert (
        cfg.sync.transport == "mqtt"
        and cfg.sync.mqtt.keepalive_s == 30
        and cfg.sync.mqtt.topic_prefix == "vendedge"
    )
    loop, _ = load_all(_write(tmp_path, 'transport = "mqtt"\n[sync.mqtt]\nurl = "mqtt://127.0.0.1:1883"'))
    assert loop.sync.mqtt.url == "mqtt://127.0.0.1:1883"
    https, _ = load_all(_write(tmp_path, 'url = "https://cloud.example.com"'))
    assert https.sync.transport == "https"


def test_mosquitto_password_hash_is_the_format_mosquitto_passwd_writes() -> None:
    salt = bytes(range(12))
    line = wire.mosquitto_hash("s3cret", salt)
    _, alg, iterations, salt_b64, digest_b64 = line.split("$")
    assert (alg, iterations, base64.b64decode(salt_b64)) == ("7", "101", salt)
    assert base64.b64decode(digest_b64) == hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    # golden line written by Debian's mosquitto_passwd 2.0.11 (`-b -c pw alice s3cret`)
    golden = "$7$101$DPzCVzaWPn3myrib$wk/mm0Oz1zMN1o71nbBdiblrevXaHW7mfmR8sY7luFlLpEMcSM/u0tD37qrt3wUR8mP9IOfo2d7PpBqCECEuKA=="
    g_salt = base64.b64decode(golden.split("$")[3])
    assert wire.mosquitto_hash("s3cret", g_salt) == golden


def test_acl_gives_each_machine_only_its_own_topics_in_the_protocols_direction() -> None:
    acl = wire.acl_text("fleet/eu").splitlines()
    assert "user refcloud" in acl and "topic readwrite fleet/eu/m/#" in acl
    mine = sorted(line for line in acl if line.startswith("pattern"))
    assert mine == sorted(
        [f"pattern write fleet/eu/m/%u/{leaf}" for leaf in ("outbox", "result", "status")]
        + [f"pattern read fleet/eu/m/%u/{leaf}" for leaf in ("ack", "config", "cmd")]
    )


@pytest.mark.parametrize(
    "name", ["vendedge/m/a/b/outbox", "other/m/m1/outbox", "vendedge/m/+/outbox", "vendedge/m/m1/"]
)
def test_topics_outside_the_layout_are_refused(name: str) -> None:
    with pytest.raises(wire.WireInvalid):
        wire.split_topic("vendedge", name)
    assert wire.split_topic("vendedge", "vendedge/m/m1/outbox") == ("m1", "outbox")


def test_demo_over_mqtt_says_how_to_install_mosquitto_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hw_sim.demo.__main__ as demo  # noqa: PLC0415  (`vendedge demo` execs this module)

    monkeypatch.setattr(demo, "mosquitto_binary", lambda: None)
    assert demo.main(["--transport", "mqtt", "--web-port", "0"]) == 2
    assert "apt-get install -y mosquitto" in capsys.readouterr().err

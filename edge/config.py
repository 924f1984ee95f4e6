"""One TOML file → frozen typed objects. Unknown keys and out-of-range values are errors naming the key.

Each section is a frozen dataclass; field metadata carries the allowed range or choices, so the check
sits next to the value it guards (Klipper's habit). `load_config(path)` is the only entry point.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pathlib
import re
import stat
import tomllib
import urllib.parse
import zoneinfo
from dataclasses import dataclass
from typing import Any

from edge.config_fields import _f, build, rng
from edge.core.errors import ConfigError


@dataclass(frozen=True)
class MachineConfig:
    id: str = _f("", required=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    data_dir: str = _f("/var/lib/vendedge")
    secrets_file: str = _f("")
    currency: str = _f("EUR", pattern=r"^[A-Z]{3}$")
    planogram_file: str = _f("")  # first planogram until the cloud sends one


@dataclass(frozen=True)
class LoggingConfig:
    level: str = _f("info", choices=("debug", "info", "warning", "error"))
    format: str = _f("auto", choices=("auto", "json", "console"))


@dataclass(frozen=True)
class VendBoardConfig:
    port: str = _f("", required=True)
    baudrate: int = _f(57600, **rng(1200, 921600))
    reply_timeout_s: float = _f(0.5, **rng(0.05, 10))
    retries: int = _f(3, **rng(0, 10))
    vend_timeout_s: float = _f(15.0, **rng(1, 120))
    jam_disable_after: int = _f(3, **rng(1, 100))


@dataclass(frozen=True)
class DoorConfig:
    source: str = _f("vend_board", choices=("vend_board", "io_module"))
    unlock_ms: int = _f(8000, **rng(500, 120000))
    open_too_long_s: float = _f(120.0, **rng(5, 3600))


@dataclass(frozen=True)
class ModbusDeviceConfig:
    unit_id: int = _f(1, **rng(1, 247))
    map: str = _f("", required=True)
    role: str = _f("", required=True, choices=("fridge", "weight_shelves", "io"))
    poll_interval_s: float = _f(1.0, **rng(0.01, 3600))
    offline_after: int = _f(3, **rng(1, 100))


@dataclass(frozen=True)
class ModbusBusConfig:
    serial_port: str = _f("")
    host: str = _f("")
    tcp_port: int = _f(502, **rng(1, 65535))
    baudrate: int = _f(19200, **rng(1200, 921600))
    timeout_s: float = _f(0.3, **rng(0.01, 10))
    retries: int = _f(1, **rng(0, 5))
    gap_ms: float = _f(2.0, **rng(0, 1000))
    devices: dict[str, ModbusDeviceConfig] = _f({})


@dataclass(frozen=True)
class TemperatureConfig:
    setpoint_c: float = _f(4.0, **rng(-30, 20))
    high_alarm_c: float = _f(8.0, **rng(-30, 40))
    high_alarm_delay_s: float = _f(900.0, **rng(0, 86400))
    low_alarm_c: float = _f(-1.0, **rng(-40, 20))
    hysteresis_c: float = _f(1.0, **rng(0, 10))
    food_safety_limit_c: float = _f(5.0, **rng(-30, 20))
    food_safety_max_s: float = _f(1800.0, **rng(0, 86400))
    restock_grace_s: float = _f(3600.0, **rng(0, 86400))
    # eco schedule (docs/operations-features.md): night/idle setback, cabinet lights off, fan with compressor
    eco: bool = _f(False)
    eco_setback_c: float = _f(1.0, **rng(0, 5))
    eco_night_start_h: float = _f(22.0, **rng(0, 24))
    eco_night_end_h: float = _f(7.0, **rng(0, 24))
    eco_idle_after_s: float = _f(7200.0, **rng(0, 86400))
    eco_wake_s: float = _f(900.0, **rng(0, 86400))
    eco_margin_c: float = _f(0.3, **rng(0, 5))
    controller_band_c: float = _f(2.0, **rng(0, 10))  # the controller's own on/off band around its setpoint


@dataclass(frozen=True)
class MqttConfig:
    """[sync.mqtt]: the MQTT 5 transport (docs/protocols/mqtt.md). The broker login is the machine id
    with a password derived from the machine secret."""

    url: str = _f("")  # mqtts://broker:8883 (plain mqtt:// only on loopback)
    topic_prefix: str = _f("vendedge", pattern=r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
    keepalive_s: int = _f(30, **rng(5, 1200))
    session_expiry_s: int = _f(7 * 86400, **rng(60, 4294967295))
    ca_file: str = _f("")
    max_message_bytes: int = _f(131072, **rng(4096, 268435455))  # 128 KiB fits AWS IoT Core
    reconnect_max_s: float = _f(10.0, **rng(0.5, 600))  # cap of the jittered reconnect backoff
    ack_timeout_s: float = _f(10.0, **rng(1, 300))  # a batch without its ack by then is sent again


@dataclass(frozen=True)
class SyncConfig:
    enabled: bool = _f(False)
    transport: str = _f("https", choices=("https", "mqtt"))
    url: str = _f("")
    ca_file: str = _f("")
    batch_max_records: int = _f(500, **rng(1, 10000))
    poll_wait_s: float = _f(25.0, **rng(0, 300))
    config_interval_s: float = _f(60.0, **rng(1, 86400))
    retry_max_s: float = _f(60.0, **rng(1, 3600))  # cap of the retry backoff while the cloud fails
    request_timeout_s: float = _f(30.0, **rng(1, 300))  # HTTPS: one request's deadline (long poll: + poll_wait_s)
    retention_days: float = _f(7.0, **rng(0, 3650))
    ledger_budget_mb: float = _f(512.0, **rng(1, 100000))
    mqtt: MqttConfig = _f(None)


def _check_timezone(name: str) -> str | None:
    """None when `name` is an IANA time zone this machine knows, else what is allowed."""
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return "an IANA time zone name such as UTC or Europe/Berlin (from the system tz database)"
    return None


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = _f(True)
    host: str = _f("127.0.0.1")
    port: int = _f(8080, **rng(0, 65535))
    # the page shows times in this IANA zone (the ledger stores UTC); "UTC" by default
    timezone: str = _f("UTC", check=_check_timezone)
    # Host names the page answers to besides IP literals, localhost and this machine's own name
    # (e.g. a DNS name or a reverse proxy's); anything else is refused as DNS rebinding
    allowed_hosts: tuple[str, ...] = _f((), item_pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


@dataclass(frozen=True)
class TakeAndGoConfig:
    enabled: bool = _f(False)
    model_dir: str = _f("")  # default: the model shipped in vision_models/models/shelf-v1
    evidence_dir: str = _f("")  # default: <data_dir>/evidence
    evidence_keep: int = _f(500, **rng(0, 1_000_000))  # sessions whose JPEGs are kept on disk
    never_opened_s: float = _f(30.0, **rng(1, 600))
    settle_s: float = _f(4.0, **rng(0.1, 120))
    fusion: bool = _f(True)
    inference_threads: int = _f(1, **rng(1, 8))


@dataclass(frozen=True)
class CameraConfig:
    """One shelf camera and the grid of cells it sees (lanes left→right, positions front→back)."""

    source: str = _f("", required=True)  # device index ("0"), a file, an MJPEG/RTSP URL or a .jpg snapshot URL
    shelf: int = _f(0, **rng(0, 63))
    width: int = _f(640, **rng(64, 4096))
    height: int = _f(480, **rng(48, 4096))
    x0: int = _f(0, **rng(0, 4096))
    y0: int = _f(0, **rng(0, 4096))
    cell_w: int = _f(0, required=True, **rng(4, 4096))
    cell_h: int = _f(0, required=True, **rng(4, 4096))
    rows: int = _f(6, **rng(1, 64))
    timeout_s: float = _f(1.0, **rng(0.05, 30))


@dataclass(frozen=True)
class OfflineAuthConfig:
    """Offline take-and-go authorization with cloud-signed QR tokens (docs/protocols/offline-token.md)."""

    enabled: bool = _f(False)
    public_keys: dict[str, str] = _f({})  # key id -> base64 of the raw 32-byte Ed25519 public key
    scanner_source: str = _f("")  # camera source of the QR scanner (as in [cameras.*].source)
    fleet: str = _f("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$")  # accept fleet:<name> tokens
    scan_interval_s: float = _f(0.25, **rng(0.02, 60))
    max_token_bytes: int = _f(1024, **rng(128, 4096))
    clock_skew_s: float = _f(60.0, **rng(0, 3600))


@dataclass(frozen=True)
class PaymentConfig:
    """[payment]: how a classic sale is paid. "none": the caller's payment_ref is taken as is; "mdb": an
    MDB cashless reader behind a Qibixx MDB-USB / Pi Hat adapter at `port` (docs/protocols/mdb.md)."""

    method: str = _f("none", choices=("none", "mdb"))
    port: str = _f("")  # the adapter's tty, e.g. /dev/ttyACM0 (required when method = "mdb")
    baudrate: int = _f(115200, **rng(1200, 921600))
    reply_timeout_s: float = _f(1.5, **rng(0.05, 10))  # above the adapter's F,RESPTIMEOUT (≤ 1 s)
    poll_interval_s: float = _f(0.05, **rng(0.01, 5))
    card_wait_s: float = _f(30.0, **rng(1, 600))
    approval_timeout_s: float = _f(30.0, **rng(1, 600))


UNIX_MAX = 4_102_444_800.0  # 2100-01-01: a Unix time past this is a typo (milliseconds, say)


@dataclass(frozen=True)
class SimulationConfig:
    """Simulated time, for simulators and demos only (absent on a real machine): the daemon's clock runs
    `time_scale` simulated seconds per real second from the real Unix time `origin_unix` (0: when the
    daemon starts), its wall clock reading `start_wall` there (0: the real time at the origin). A
    simulator in another process that counts from the same origin reads the same simulated time."""

    time_scale: float = _f(1.0, **rng(1, 100000))
    origin_unix: float = _f(0.0, **rng(0, UNIX_MAX))
    start_wall: float = _f(0.0, **rng(0, UNIX_MAX))

    @property
    def active(self) -> bool:
        return self.time_scale != 1.0 or self.origin_unix != 0.0 or self.start_wall != 0.0


@dataclass(frozen=True)
class Config:
    machine: MachineConfig
    vend_board: VendBoardConfig
    logging: LoggingConfig = _f(None)
    door: DoorConfig = _f(None)
    temperature: TemperatureConfig = _f(None)
    modbus: dict[str, ModbusBusConfig] = _f({})
    sync: SyncConfig = _f(None)
    web: WebConfig = _f(None)
    takeandgo: TakeAndGoConfig = _f(None)
    cameras: dict[str, CameraConfig] = _f({})
    offline_auth: OfflineAuthConfig = _f(None)
    payment: PaymentConfig = _f(None)
    simulation: SimulationConfig = _f(None)
    source: str = _f("", internal=True)


@dataclass(frozen=True)
class Secrets:
    machine_secret: str = _f("")
    metrics_token: str = _f("")


def _read_toml(p: pathlib.Path, key: str) -> dict[str, Any]:
    """Parse one TOML file; every way it can be unreadable is a ConfigError naming the file."""
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(key, str(p), "an existing TOML file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(key, str(p), "a TOML file (this path is a directory)") from exc
    except PermissionError as exc:
        raise ConfigError(key, str(p), "a file this user may read") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(key, str(p), f"a UTF-8 text file (byte {exc.start} is not UTF-8)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, str(p), f"valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(key, str(p), f"a readable file ({exc.strerror})") from exc


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the TOML file; raise ConfigError naming the key, value and what is allowed."""
    p = pathlib.Path(path)
    cfg: Config = build(Config, _read_toml(p, "<file>"), "")
    return dataclasses.replace(cfg, source=str(p))


def load_secrets(path: str | os.PathLike[str]) -> Secrets:
    """Secrets live apart from the config, readable by the owner only (mode 0600). A configured
    secrets file that is missing is an error: a silently empty secret fails later and less clearly."""
    p = pathlib.Path(path)
    if not p.exists():
        raise ConfigError("machine.secrets_file", str(p), "an existing TOML file (mode 0600)")
    if p.is_file():
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise ConfigError("machine.secrets_file", f"{p} mode {mode:o}", "a file with mode 0600 (owner only)")
    secrets: Secrets = build(Secrets, _read_toml(p, "machine.secrets_file"), "secrets")
    return secrets


def load_all(path: str | os.PathLike[str]) -> tuple[Config, Secrets]:
    """Config + secrets + the rules that span keys: what `check-config` and `run` both use."""
    cfg = load_config(path)
    secrets = load_secrets(cfg.machine.secrets_file) if cfg.machine.secrets_file else Secrets()
    validate(cfg, secrets)
    return cfg, secrets


def validate(cfg: Config, secrets: Secrets) -> None:
    """Cross-key rules (one key's meaning depends on another's), checked before anything starts."""
    if cfg.payment.method == "mdb" and not cfg.payment.port:
        raise ConfigError("payment.port", "", 'the MDB adapter\'s tty (e.g. /dev/ttyACM0) when payment.method = "mdb"')
    if not cfg.sync.enabled:
        return
    if cfg.sync.transport == "mqtt":
        _validate_mqtt(cfg.sync.mqtt)
    else:
        url = cfg.sync.url
        if not re.match(r"^https?://[^/]", url):
            raise ConfigError("sync.url", url, "an http(s):// URL when sync.enabled = true")
        if not url.startswith("https://") and not _loopback(url):
            raise ConfigError("sync.url", url, "https:// (plain http only on loopback)")
    try:
        secret = bytes.fromhex(secrets.machine_secret)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        where = cfg.machine.secrets_file or "(no machine.secrets_file configured)"
        raise ConfigError("secrets.machine_secret", "<hidden>",
                          f"a hex string of at least 16 bytes in {where} when sync.enabled = true")


def _validate_mqtt(m: MqttConfig) -> None:
    """sync.transport = "mqtt": a broker URL, TLS unless the broker is on loopback."""
    if not re.match(r"^mqtts?://[^/:]+(:[0-9]{1,5})?/?$", m.url):
        raise ConfigError("sync.mqtt.url", m.url, "mqtts://host[:port] when sync.transport = \"mqtt\"")
    if m.url.startswith("mqtt://") and not _loopback("http://" + m.url[len("mqtt://"):]):
        raise ConfigError("sync.mqtt.url", m.url, "mqtts:// (plain mqtt:// only on loopback)")


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

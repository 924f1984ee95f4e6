"""Run a local Mosquitto broker (Debian's `mosquitto`) on loopback with password + ACL files:
for the tests, `bench/run.py fleet-mqtt` and `vendedge demo --transport mqtt`. A fleet uses the
operator's own broker; this only writes the same files `vendedge refcloud mqtt-acl` writes."""

from __future__ import annotations

import getpass
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping

from sync.transport import mqtt_wire as wire

INSTALL_HINT = (
    "Mosquitto is not installed: `sudo apt-get install -y mosquitto` (Debian/Ubuntu), then run this again."
)


def mosquitto_binary() -> str | None:
    """Path of the broker binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def write_auth_files(
    directory: pathlib.Path, passwords: Mapping[str, str], prefix: str, *, cloud_user: str = wire.CLOUD_USER
) -> tuple[pathlib.Path, pathlib.Path]:
    """`passwd` (hashed, mode 0600) and `acl` for these users → their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    passwd, acl = directory / "passwd", directory / "acl"
    text = "".join(f"{user}:{wire.mosquitto_hash(pw)}\n" for user, pw in sorted(passwords.items()))
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    acl.write_text(wire.acl_text(prefix, cloud_user))
    return passwd, acl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One Mosquitto process on 127.0.0.1:`port`, persistence in `directory` (so a restart keeps
    retained messages and persistent sessions, as a production broker does); with `tls` =
    (CA file, server certificate, key) it listens for mqtts:// only."""

    def __init__(
        self,
        directory: pathlib.Path,
        passwd: pathlib.Path,
        acl: pathlib.Path,
        *,
        port: int = 0,
        max_keepalive: int = 65535,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        tls_lines = [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"] if tls else []
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        user = getpass.getuser()
        self.conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    *tls_lines,
                    "allow_anonymous false",
                    f"password_file {passwd}",
                    f"acl_file {acl}",
                    "persistence true",
                    f"persistence_location {directory}/",
                    "autosave_interval 60",
                    "max_queued_messages 10000",
                    "max_inflight_messages 1000",
                    f"max_keepalive {max_keepalive}",
                    "max_packet_size 1048576",
                    "set_tcp_nodelay true",  # small acks must not wait for Nagle + delayed ACK (40 ms)
                    f"user {user}",
                    f"log_dest file {self.log}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "connection_messages false",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> Broker:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (saves its persistence file) or SIGKILL (loses what was not saved yet)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def reload(self) -> None:
        """SIGHUP: re-read the password and ACL files (new machines)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def rss_mb(self) -> float:
        if self.proc is None:
            return 0.0
        try:
            for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def __enter__(self) -> Broker:
        return self.start() if self.proc is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()

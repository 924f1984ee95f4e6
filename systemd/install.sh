#!/usr/bin/env bash
# Install vendedge as a systemd service on the machine's board (run as root from the source tree).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
install -d /opt/vendedge
python3 -m venv /opt/vendedge/.venv
/opt/vendedge/.venv/bin/pip install -q "$SRC"
install -m 0644 "$SRC/systemd/vendedge.sysusers.conf" /usr/lib/sysusers.d/vendedge.conf
install -m 0644 "$SRC/systemd/vendedge.tmpfiles.conf" /usr/lib/tmpfiles.d/vendedge.conf
install -m 0644 "$SRC/systemd/99-vendedge.rules" /etc/udev/rules.d/99-vendedge.rules
systemd-sysusers && systemd-tmpfiles --create
[ -e /etc/vendedge/vendedge.toml ] || install -m 0640 -g vendedge "$SRC/systemd/vendedge.toml.example" /etc/vendedge/vendedge.toml
[ -e /etc/vendedge/secrets.toml ] || { umask 077; printf 'machine_secret = "%s"\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > /etc/vendedge/secrets.toml; chown vendedge /etc/vendedge/secrets.toml; }
install -m 0644 "$SRC/systemd/vendedge.service" /etc/systemd/system/vendedge.service
udevadm control --reload && udevadm trigger
/opt/vendedge/.venv/bin/vendedge check-config --config /etc/vendedge/vendedge.toml
systemctl daemon-reload && systemctl enable --now vendedge

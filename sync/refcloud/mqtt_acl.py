"""`vendedge refcloud mqtt-acl`: write the Mosquitto password and ACL files for the machines the
reference cloud knows (docs/protocols/mqtt.md, "Identity and ACL").

Each machine logs in as its machine id with a password derived from its sync secret, so nothing new
is provisioned on the machine; the broker stores only PBKDF2-SHA512 hashes. Re-run it after
registering machines and send the broker SIGHUP to reload.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

from sync.refcloud.store import Store
from sync.transport import mqtt_wire as wire
from sync.transport.mosquitto import write_auth_files


def passwords(db_path: str, cloud_password: str, cloud_user: str = wire.CLOUD_USER) -> dict[str, str]:
    """username → clear password: every machine in the store, plus the cloud's own user."""
    store = Store(db_path)
    try:
        users = {machine_id: wire.machine_password(secret) for machine_id, secret in store.secrets().items()}
    finally:
        store.close()
    if cloud_user in users:
        raise ValueError(f"a machine is called {cloud_user!r}: pick another --cloud-user")
    users[cloud_user] = cloud_password
    return users


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vendedge refcloud mqtt-acl", description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True, help="the reference cloud's SQLite file")
    p.add_argument("--out", required=True, help="directory for `passwd` (mode 0600) and `acl`")
    p.add_argument("--prefix", default=wire.DEFAULT_PREFIX, help="topic prefix (default %(default)s)")
    p.add_argument("--cloud-user", default=wire.CLOUD_USER)
    p.add_argument(
        "--cloud-password",
        default=os.environ.get("VENDEDGE_MQTT_PASSWORD"),
        help="the cloud's broker password (or env VENDEDGE_MQTT_PASSWORD)",
    )
    args = p.parse_args(argv)
    if not args.cloud_password or len(args.cloud_password) < 12:
        p.error("--cloud-password (>= 12 characters) is required")
    if not pathlib.Path(args.db).exists():
        p.error(f"--db {args.db}: no such file")
    if not wire.PREFIX_RE.match(args.prefix):
        p.error("--prefix: letters, digits, _ . - separated by /")
    users = passwords(args.db, args.cloud_password, args.cloud_user)
    passwd, acl = write_auth_files(pathlib.Path(args.out), users, args.prefix, cloud_user=args.cloud_user)
    sys.stdout.write(f"wrote {passwd} ({len(users) - 1} machines + {args.cloud_user}) and {acl}\n")
    sys.stdout.write(f"mosquitto.conf: password_file {passwd}\n                acl_file {acl}\n")
    return 0

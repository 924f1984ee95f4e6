"""`vendedge user add|list|remove`: technician accounts in the machine's ledger. There is no default password.

The password is read from standard input with `--password-stdin` (first line; for provisioning scripts)
or asked twice on a terminal. It is never taken from the command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import pathlib
import sys

from edge.config import load_config
from edge.core.accounts import AuthError
from edge.ledger.db import LedgerDB
from edge.logs import setup_logging
from edge.services.accounts import Accounts


def _password(args: argparse.Namespace) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise AuthError("bad_input", "no terminal: pass the password on standard input with --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise AuthError("bad_input", "the two passwords differ")
    return first


async def _run(args: argparse.Namespace, ledger_path: str) -> int:
    db = await LedgerDB.open(ledger_path)
    try:
        store = Accounts(db)
        if args.action == "add":
            user = await store.add(args.name, args.role, _password(args))
            print(f"added {user.name} ({user.role})")
        elif args.action == "remove":
            print("removed" if await store.remove(args.name) else f"no user {args.name}")
        else:
            for u in await store.list():
                print(f"{u['name']}\t{u['role']}\tcreated {u['created_at']}\tfailed_logins {u['failed_logins']}")
    finally:
        await db.close()
    return 0


def user_command(args: argparse.Namespace) -> int:
    """Entry point from `edge.cli`. Returns the process exit code."""
    if args.action in ("add", "remove") and not args.name:
        print(f"vendedge user {args.action}: NAME is required", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    setup_logging(cfg.machine.id, level="warning")  # the command's own output is the answer; logs only warn
    data = pathlib.Path(cfg.machine.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run(args, str(data / "ledger.sqlite3")))
    except AuthError as exc:
        print(f"vendedge user {args.action}: {exc}", file=sys.stderr)
        return 2

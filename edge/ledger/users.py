"""Technician accounts and web sessions in the ledger: the `users` and `web_sessions` rows and their
audit events (which also go to the outbox for the cloud).

Only rows here. The rules — password hashing, lockout, session lifetime, what a valid name is — are in
`edge.services.accounts` and `edge.core.accounts`. A session is stored under the SHA-256 of its token,
never the token, so a copied ledger file holds no live session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.core.accounts import User, WebSession
from edge.ledger.db import LedgerDB, Tx


@dataclass(frozen=True)
class Account:
    """A `users` row as the login flow needs it."""

    user: User
    pw_hash: str
    failed_logins: int
    locked_until: float  # wall time (epoch s); 0 = not locked


async def audit(tx: Tx, actor: str, action: str, outcome: str = "ok", **detail: Any) -> None:
    """Who did what, when: an `audit` event, which also goes to the outbox for the cloud."""
    await tx.event("audit", {"actor": actor, "action": action, "outcome": outcome, **detail},
                   severity="info" if outcome == "ok" else "warning", source="web")


async def find(db: LedgerDB, name: str) -> Account | None:
    row = await db.fetchone("SELECT role, pw_hash, failed_logins, locked_until FROM users WHERE name=?", (name,))
    if row is None:
        return None
    return Account(User(name, row["role"]), row["pw_hash"], row["failed_logins"], row["locked_until"])


async def insert(db: LedgerDB, user: User, pw_hash: str, *, actor: str) -> bool:
    """Add an account (audited). False, and nothing written, when the name exists."""
    async with db.tx() as tx:
        if await tx.fetchone("SELECT 1 FROM users WHERE name=?", (user.name,)):
            return False
        await tx.execute("INSERT INTO users(name, role, pw_hash, created_at) VALUES (?,?,?,?)",
                         (user.name, user.role, pw_hash, tx.now))
        await audit(tx, actor, "user_add", user=user.name, role=user.role)
    return True


async def delete(db: LedgerDB, name: str, *, actor: str) -> bool:
    """Remove an account and its sessions (audited). False when there was no such account."""
    async with db.tx() as tx:
        cur = await tx.execute("DELETE FROM users WHERE name=?", (name,))
        gone = cur.rowcount > 0
        if gone:
            await tx.execute("DELETE FROM web_sessions WHERE name=?", (name,))
            await audit(tx, actor, "user_remove", user=name)
    return gone


async def listing(db: LedgerDB) -> list[dict[str, Any]]:
    rows = await db.fetchall("SELECT name, role, created_at, failed_logins, locked_until FROM users ORDER BY name")
    return [dict(r) for r in rows]


async def login_refused(db: LedgerDB, name: str, outcome: str, **detail: Any) -> None:
    """A login refused before its password was checked (e.g. `locked`): the audit row only."""
    async with db.tx() as tx:
        await audit(tx, name, "login", outcome, **detail)


async def login_succeeded(db: LedgerDB, name: str) -> None:
    """Clear the account's failures and lock; audit the login."""
    async with db.tx() as tx:
        await tx.execute("UPDATE users SET failed_logins=0, locked_until=0 WHERE name=?", (name,))
        await audit(tx, name, "login")


async def login_failed(db: LedgerDB, name: str, failures: int, locked_until: float, *, known: bool) -> None:
    """Store a known account's failure count and lock; audit the failure (an unknown name too)."""
    async with db.tx() as tx:
        if known:
            await tx.execute("UPDATE users SET failed_logins=?, locked_until=? WHERE name=?",
                             (failures, locked_until, name))
        await audit(tx, name, "login", "bad_credentials", failures=failures)


async def insert_session(db: LedgerDB, token_hash: str, sess: WebSession, now: float) -> None:
    """Store a new session; sessions expired before `now` are purged on the way."""
    async with db.tx() as tx:
        await tx.execute("DELETE FROM web_sessions WHERE expires_at < ?", (now,))
        await tx.execute("INSERT INTO web_sessions(token_hash, name, csrf, created_at, expires_at) "
                         "VALUES (?,?,?,?,?)", (token_hash, sess.user.name, sess.csrf, now, sess.expires_at))


async def find_session(db: LedgerDB, token_hash: str) -> WebSession | None:
    """The stored session (expired or not) of a still existing account, or None."""
    row = await db.fetchone(
        "SELECT s.csrf, s.expires_at, u.name, u.role FROM web_sessions s JOIN users u ON u.name = s.name "
        "WHERE s.token_hash=?", (token_hash,))
    if row is None:
        return None
    return WebSession(User(row["name"], row["role"]), row["csrf"], row["expires_at"])


async def delete_session(db: LedgerDB, token_hash: str, *, actor: str) -> None:
    async with db.tx() as tx:
        await tx.execute("DELETE FROM web_sessions WHERE token_hash=?", (token_hash,))
        await audit(tx, actor, "logout")

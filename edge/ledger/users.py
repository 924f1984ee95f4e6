"""Technician accounts and web sessions: scrypt password hashes, lockout with backoff, audited logins.

Passwords are hashed with scrypt (RFC 7914) from the standard library; the stored string carries its
own cost parameters (``scrypt$n$r$p$salt$hash``) so they can be raised later without a migration.
Session tokens are random; only their SHA-256 is stored, so a copied ledger file holds no live token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import structlog

from edge.clock import SystemClock
from edge.core.errors import EdgeError
from edge.ledger.db import LedgerDB, Tx

log = structlog.get_logger(__name__)

ROLES = ("technician", "viewer", "kiosk")  # kiosk: the machine's own touchscreen app (sells only)
SCRYPT_N, SCRYPT_R, SCRYPT_P, DKLEN = 2**14, 8, 1, 32
MAX_FAILURES = 5          # the 6th attempt after 5 failures is refused even with the right password
LOCK_BASE_S = 30.0        # first lock; doubles with every further failure
LOCK_MAX_S = 900.0
SESSION_TTL_S = 12 * 3600.0
MIN_PASSWORD_LEN = 10


class AuthError(EdgeError):
    """A login or account operation was refused. `reason`: bad_credentials | locked | bad_input | exists."""

    def __init__(self, reason: str, detail: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == "technician"


@dataclass(frozen=True)
class WebSession:
    user: User
    csrf: str
    expires_at: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """Hash with a fresh 16-byte salt. Returns the self-describing string stored in `users.pw_hash`."""
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=DKLEN, maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a `hash_password` string. Malformed hashes never match."""
    try:
        algo, n, r, p, salt, want = stored.split("$")
        if algo != "scrypt":
            return False
        dk = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                            dklen=len(_unb64(want)), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(dk, _unb64(want))


def lock_seconds(failures: int) -> float:
    """How long an account stays locked after `failures` consecutive failures (0 below the limit)."""
    if failures < MAX_FAILURES:
        return 0.0
    return float(min(LOCK_MAX_S, LOCK_BASE_S * 2.0 ** (failures - MAX_FAILURES)))


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise AuthError("bad_input", f"password must have at least {MIN_PASSWORD_LEN} characters")


# Verifying an unknown user's password against this keeps the timing of "no such user" and "wrong password" alike.
_DUMMY_HASH = hash_password("not-a-real-password", n=SCRYPT_N)


async def audit(tx: Tx, actor: str, action: str, outcome: str = "ok", **detail: Any) -> None:
    """Who did what, when: an `audit` event, which also goes to the outbox for the cloud."""
    await tx.event("audit", {"actor": actor, "action": action, "outcome": outcome, **detail},
                   severity="info" if outcome == "ok" else "warning", source="web")


class UserStore:
    """Accounts and sessions in the ledger (tables `users`, `web_sessions`)."""

    def __init__(self, db: LedgerDB, clock: SystemClock | None = None) -> None:
        self.db = db
        self.clock = clock or db.clock  # a sped-up demo clock may be swapped for wall time here

    def _now(self) -> float:
        return self.clock.wall()

    async def add(self, name: str, role: str, password: str, *, actor: str = "cli") -> User:
        if role not in ROLES:
            raise AuthError("bad_input", f"role must be one of {ROLES}")
        if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum() or len(name) > 64:
            raise AuthError("bad_input", "name: letters, digits, '.', '-', '_' (max 64)")
        check_new_password(password)
        pw_hash = await asyncio.to_thread(hash_password, password)
        async with self.db.tx() as tx:
            if await tx.fetchone("SELECT 1 FROM users WHERE name=?", (name,)):
                raise AuthError("exists", name)
            await tx.execute("INSERT INTO users(name, role, pw_hash, created_at) VALUES (?,?,?,?)",
                             (name, role, pw_hash, tx.now))
            await audit(tx, actor, "user_add", user=name, role=role)
        log.info("user_added", user=name, role=role)
        return User(name, role)

    async def remove(self, name: str, *, actor: str = "cli") -> bool:
        async with self.db.tx() as tx:
            cur = await tx.execute("DELETE FROM users WHERE name=?", (name,))
            gone = cur.rowcount > 0
            if gone:
                await tx.execute("DELETE FROM web_sessions WHERE name=?", (name,))
                await audit(tx, actor, "user_remove", user=name)
        return gone

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT name, role, created_at, failed_logins, locked_until FROM users "
                                      "ORDER BY name")
        return [dict(r) for r in rows]

    async def authenticate(self, name: str, password: str) -> User:
        """Check a login. Raises AuthError('locked', retry_after_s=…) or AuthError('bad_credentials')."""
        row = await self.db.fetchone("SELECT role, pw_hash, failed_logins, locked_until FROM users WHERE name=?",
                                     (name,))
        now = self._now()
        if row is not None and row["locked_until"] > now:
            async with self.db.tx() as tx:
                await audit(tx, name, "login", "locked", retry_after_s=round(row["locked_until"] - now, 1))
            raise AuthError("locked", name, retry_after_s=row["locked_until"] - now)
        ok = await asyncio.to_thread(verify_password, password, row["pw_hash"] if row else _DUMMY_HASH)
        async with self.db.tx() as tx:
            if row is not None and ok:
                await tx.execute("UPDATE users SET failed_logins=0, locked_until=0 WHERE name=?", (name,))
                await audit(tx, name, "login")
                return User(name, row["role"])
            failures = (row["failed_logins"] + 1) if row else 0
            if row is not None:
                until = now + lock_seconds(failures) if lock_seconds(failures) else 0.0
                await tx.execute("UPDATE users SET failed_logins=?, locked_until=? WHERE name=?",
                                 (failures, until, name))
            await audit(tx, name, "login", "bad_credentials", failures=failures)
        log.warning("login_failed", user=name, failures=failures)
        raise AuthError("bad_credentials", name)

    async def create_session(self, user: User, ttl_s: float = SESSION_TTL_S) -> tuple[str, WebSession]:
        """Open a session; returns (cookie token, session). Expired sessions are purged on the way."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        sess = WebSession(user, secrets.token_urlsafe(32), now + ttl_s)
        async with self.db.tx() as tx:
            await tx.execute("DELETE FROM web_sessions WHERE expires_at < ?", (now,))
            await tx.execute("INSERT INTO web_sessions(token_hash, name, csrf, created_at, expires_at) "
                             "VALUES (?,?,?,?,?)", (_token_hash(token), user.name, sess.csrf, now, sess.expires_at))
        return token, sess

    async def session(self, token: str) -> WebSession | None:
        """The live session for a cookie token, or None (unknown, expired, or its user removed)."""
        if not token or len(token) > 128:
            return None
        row = await self.db.fetchone(
            "SELECT s.csrf, s.expires_at, u.name, u.role FROM web_sessions s JOIN users u ON u.name = s.name "
            "WHERE s.token_hash=?", (_token_hash(token),))
        if row is None or row["expires_at"] < self._now():
            return None
        return WebSession(User(row["name"], row["role"]), row["csrf"], row["expires_at"])

    async def end_session(self, token: str, actor: str) -> None:
        async with self.db.tx() as tx:
            await tx.execute("DELETE FROM web_sessions WHERE token_hash=?", (_token_hash(token),))
            await audit(tx, actor, "logout")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

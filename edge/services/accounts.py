"""Technician accounts and web sessions: scrypt password hashes, lockout with backoff, audited logins.

Passwords are hashed with scrypt (RFC 7914) from the standard library; the stored string carries its
own cost parameters (``scrypt$n$r$p$salt$hash``) so they can be raised later without a migration.
Session tokens are random; only their SHA-256 is stored, so a copied ledger file holds no live token.
The pure rules (roles, lockout backoff, name and password checks) are in `edge.core.accounts`; the rows
in `edge.ledger.users`. The web reaches this through `Queries.users`; `vendedge user` directly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from typing import Any

import structlog

from edge.clock import SystemClock
from edge.core.accounts import (
    SESSION_TTL_S,
    AuthError,
    User,
    WebSession,
    check_new_account,
    lock_seconds,
)
from edge.ledger import users as rows
from edge.ledger.db import LedgerDB

log = structlog.get_logger(__name__)

SCRYPT_N, SCRYPT_R, SCRYPT_P, DKLEN = 2**14, 8, 1, 32
MAX_TOKEN_LEN = 128  # a longer cookie is not one of ours: refused before hashing


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


# Verifying an unknown user's password against this keeps the timing of "no such user" and "wrong password" alike.
_DUMMY_HASH = hash_password("not-a-real-password", n=SCRYPT_N)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Accounts and sessions of one machine's ledger (tables `users`, `web_sessions`)."""

    def __init__(self, db: LedgerDB, clock: SystemClock | None = None) -> None:
        self.db = db
        self.clock = clock or db.clock  # a sped-up demo clock may be swapped for wall time here

    def _now(self) -> float:
        return self.clock.wall()

    async def add(self, name: str, role: str, password: str, *, actor: str = "cli") -> User:
        check_new_account(name, role, password)
        pw_hash = await asyncio.to_thread(hash_password, password)
        user = User(name, role)
        if not await rows.insert(self.db, user, pw_hash, actor=actor):
            raise AuthError("exists", name)
        log.info("user_added", user=name, role=role)
        return user

    async def remove(self, name: str, *, actor: str = "cli") -> bool:
        return await rows.delete(self.db, name, actor=actor)

    async def list(self) -> list[dict[str, Any]]:
        return await rows.listing(self.db)

    async def authenticate(self, name: str, password: str) -> User:
        """Check a login. Raises AuthError('locked', retry_after_s=…) or AuthError('bad_credentials')."""
        account = await rows.find(self.db, name)
        now = self._now()
        if account is not None and account.locked_until > now:
            wait = account.locked_until - now
            await rows.login_refused(self.db, name, "locked", retry_after_s=round(wait, 1))
            raise AuthError("locked", name, retry_after_s=wait)
        ok = await asyncio.to_thread(verify_password, password, account.pw_hash if account else _DUMMY_HASH)
        if account is not None and ok:
            await rows.login_succeeded(self.db, name)
            return account.user
        failures = account.failed_logins + 1 if account else 0
        lock = lock_seconds(failures)
        await rows.login_failed(self.db, name, failures, now + lock if lock else 0.0, known=account is not None)
        log.warning("login_failed", user=name, failures=failures)
        raise AuthError("bad_credentials", name)

    async def create_session(self, user: User, ttl_s: float = SESSION_TTL_S) -> tuple[str, WebSession]:
        """Open a session; returns (cookie token, session). Expired sessions are purged on the way."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        sess = WebSession(user, secrets.token_urlsafe(32), now + ttl_s)
        await rows.insert_session(self.db, _token_hash(token), sess, now)
        return token, sess

    async def session(self, token: str) -> WebSession | None:
        """The live session for a cookie token, or None (unknown, expired, or its user removed)."""
        if not token or len(token) > MAX_TOKEN_LEN:
            return None
        sess = await rows.find_session(self.db, _token_hash(token))
        if sess is None or sess.expires_at < self._now():
            return None
        return sess

    async def end_session(self, token: str, actor: str) -> None:
        await rows.delete_session(self.db, _token_hash(token), actor=actor)

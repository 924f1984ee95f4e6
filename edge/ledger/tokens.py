"""Offline-token rows: used nonces (one token, one session) and revocations pushed by the cloud.

The SQL of `edge.services.offline_auth`; the service keeps the checks, this module the rows.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge.ledger.db import LedgerDB, Tx


async def claim_nonce(tx: Tx, nonce: str, keep_until: float, *, forget_before: float) -> bool:
    """Record a nonce as used (False when it already was); nonces expired before `forget_before` go."""
    await tx.execute("DELETE FROM token_nonces WHERE expires_at < ?", (forget_before,))
    if await tx.fetchone("SELECT 1 FROM token_nonces WHERE nonce=?", (nonce,)):
        return False
    await tx.execute("INSERT INTO token_nonces(nonce, expires_at) VALUES (?, ?)", (nonce, keep_until))
    return True


async def release_nonce(tx: Tx, nonce: str) -> None:
    """Nothing was unlocked with this token: it may be used again."""
    await tx.execute("DELETE FROM token_nonces WHERE nonce=?", (nonce,))


async def revocations(db: LedgerDB) -> list[tuple[str, str]]:
    """Every revocation as (kind, value); kind is "customer" or "kid"."""
    rows = await db.fetchall("SELECT kind, value FROM token_revocations")
    return [(str(r["kind"]), str(r["value"])) for r in rows]


async def revoke(tx: Tx, items: Iterable[tuple[str, str]], reason: str) -> None:
    for kind, value in items:
        await tx.execute(
            "INSERT OR IGNORE INTO token_revocations(kind, value, revoked_at, reason) VALUES (?,?,?,?)",
            (kind, value, tx.now, reason),
        )

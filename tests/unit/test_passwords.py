"""Password hashing, lockout backoff and sessions of technician accounts (real SQLite file)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.clock import ManualClock
from edge.core.accounts import LOCK_BASE_S, LOCK_MAX_S, MAX_FAILURES, AuthError, lock_seconds
from edge.ledger.db import LedgerDB
from edge.services.accounts import Accounts, hash_password, verify_password

FAST = {"n": 2**8}  # hypothesis runs many cases; the cost parameter is stored in the hash itself


def test_hash_is_scrypt_salted_and_verifies():
    h1, h2 = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert h1.startswith("scrypt$16384$8$1$")
    assert h1 != h2  # fresh salt each time
    assert verify_password("correct horse battery", h1)
    assert not verify_password("correct horse batterY", h1)
    assert "correct horse" not in h1


@settings(max_examples=25, deadline=None)
@given(pw=st.text(min_size=1, max_size=40), other=st.text(min_size=1, max_size=40))
def test_only_the_same_password_verifies(pw, other):
    h = hash_password(pw, **FAST)
    assert verify_password(pw, h)
    assert verify_password(other, h) == (other == pw)


@pytest.mark.parametrize("stored", ["", "plain", "md5$x$y", "scrypt$16384$8$1$salt", "scrypt$x$8$1$AA$AA",
                                    "scrypt$0$8$1$AAAA$AAAA"])
def test_malformed_hashes_never_match(stored):
    assert verify_password("anything", stored) is False


def test_lock_backoff_doubles_from_the_fifth_failure_and_is_capped():
    assert [lock_seconds(n) for n in range(MAX_FAILURES)] == [0.0] * MAX_FAILURES
    assert lock_seconds(MAX_FAILURES) == LOCK_BASE_S
    assert lock_seconds(MAX_FAILURES + 1) == 2 * LOCK_BASE_S
    assert lock_seconds(MAX_FAILURES + 20) == LOCK_MAX_S


@pytest.fixture
async def store(tmp_path):
    clock = ManualClock()
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"), clock)
    yield Accounts(db), clock
    await db.close()
    for t in threading.enumerate():  # aiosqlite's worker resolves close() a moment before it exits
        if "_connection_worker_thread" in t.name:
            t.join(2.0)


async def _audits(db: LedgerDB) -> list[dict]:
    rows = await db.fetchall("SELECT data FROM events WHERE kind='audit' ORDER BY event_id")
    return [json.loads(r["data"]) for r in rows]


async def test_sixth_attempt_is_refused_even_with_the_right_password_then_backoff_expires(store):
    users, clock = store
    await users.add("alice", "technician", "correct horse battery")
    for _ in range(MAX_FAILURES):
        with pytest.raises(AuthError) as exc:
            await users.authenticate("alice", "wrong password!")
        assert exc.value.reason == "bad_credentials"
    with pytest.raises(AuthError) as exc:
        await users.authenticate("alice", "correct horse battery")
    assert exc.value.reason == "locked" and 0 < exc.value.retry_after_s <= LOCK_BASE_S
    clock.advance(LOCK_BASE_S + 1)
    user = await users.authenticate("alice", "correct horse battery")
    assert user.name == "alice" and user.can_act
    outcomes = [a["outcome"] for a in await _audits(users.db) if a["action"] == "login"]
    assert outcomes == ["bad_credentials"] * 5 + ["locked", "ok"]
    outbox = await users.db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE payload LIKE '%\"audit\"%'")
    assert outbox["n"] >= 8  # user_add + 7 login audits reach the cloud too


async def test_failure_after_a_lock_doubles_it(store):
    users, clock = store
    await users.add("bob", "viewer", "correct horse battery")
    for _ in range(MAX_FAILURES):
        with pytest.raises(AuthError):
            await users.authenticate("bob", "nope nope nope")
    clock.advance(LOCK_BASE_S + 1)
    with pytest.raises(AuthError):
        await users.authenticate("bob", "still wrong!!")
    with pytest.raises(AuthError) as exc:
        await users.authenticate("bob", "correct horse battery")
    assert exc.value.reason == "locked" and exc.value.retry_after_s > LOCK_BASE_S


async def test_sessions_expire_and_die_with_their_user(store):
    users, clock = store
    user = await users.add("carol", "viewer", "correct horse battery")
    token, sess = await users.create_session(user, ttl_s=60)
    got = await users.session(token)
    assert got is not None and got.user.role == "viewer" and not got.user.can_act and got.csrf == sess.csrf
    assert await users.session(token + "x") is None
    row = await users.db.fetchone("SELECT token_hash FROM web_sessions")
    assert row["token_hash"] != token  # only the hash is stored
    clock.advance(61)
    assert await users.session(token) is None
    token2, _ = await users.create_session(user)
    await users.remove("carol")
    assert await users.session(token2) is None


async def test_no_weak_password_no_duplicate_no_unknown_role(store):
    users, _ = store
    with pytest.raises(AuthError, match="at least"):
        await users.add("dave", "technician", "short")
    with pytest.raises(AuthError, match="role"):
        await users.add("dave", "admin", "correct horse battery")
    await users.add("dave", "technician", "correct horse battery")
    with pytest.raises(AuthError) as exc:
        await users.add("dave", "viewer", "another good one")
    assert exc.value.reason == "exists"
    assert [u["name"] for u in await users.list()] == ["dave"]

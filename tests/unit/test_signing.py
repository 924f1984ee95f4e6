"""Request and command signatures: golden vectors (checked with openssl) and tamper detection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import signing

SECRET = b"machine-secret-0001"
REQ = {"method": "POST", "path_qs": "/v1/machines/m1/outbox", "timestamp": "1700000000",
       "nonce": "abc123", "body": b'{"records":[]}'}
# printf 'POST\n/v1/machines/m1/outbox\n1700000000\nabc123\n%s' "$(printf '{"records":[]}' |
#   sha256sum | cut -d' ' -f1)" | openssl dgst -sha256 -hmac machine-secret-0001
GOLDEN_REQUEST = "e710e3dc4c4ed3a742d2630750887491012f5b93bb2dca45829a502ce7aa7e8f"
COMMAND = {"command_id": "c1", "name": "vend", "args": {"slot": "A1"},
           "issued_at": "2024-01-01T00:00:00Z", "expires_at": None}
GOLDEN_COMMAND = "788a8bca2383f831ab31994e76ffc68796e9cd5eec4a786f73cefdac29208ecf"


def test_request_signature_matches_golden_vector() -> None:
    assert signing.sign_request(SECRET, **REQ) == GOLDEN_REQUEST
    assert signing.verify_request(SECRET, **REQ, signature=GOLDEN_REQUEST)
    assert signing.verify_request(SECRET, **REQ, signature=GOLDEN_REQUEST.upper())


@pytest.mark.parametrize("field,value", [
    ("method", "GET"), ("path_qs", "/v1/machines/m2/outbox"), ("path_qs", "/v1/machines/m1/outbox?x=1"),
    ("timestamp", "1700000001"), ("nonce", "abc124"), ("body", b'{"records":[{}]}'), ("body", b""),
])
def test_tampering_any_signed_part_invalidates(field: str, value: object) -> None:
    tampered = dict(REQ, **{field: value})
    assert not signing.verify_request(SECRET, **tampered, signature=GOLDEN_REQUEST)


def test_wrong_secret_or_garbled_signature_is_invalid() -> None:
    assert not signing.verify_request(b"other-secret", **REQ, signature=GOLDEN_REQUEST)
    assert not signing.verify_request(SECRET, **REQ, signature=GOLDEN_REQUEST[:-1] + "0")
    assert not signing.verify_request(SECRET, **REQ, signature="")


@given(body=st.binary(max_size=256), flip=st.integers(min_value=0, max_value=255))
def test_any_body_change_is_detected(body: bytes, flip: int) -> None:
    sig = signing.sign_request(SECRET, "POST", "/p", "1", "n", body)
    changed = body[:flip] + bytes([(body[flip] ^ 1)]) + body[flip + 1:] if flip < len(body) else body + b"x"
    assert not signing.verify_request(SECRET, "POST", "/p", "1", "n", changed, sig)


def test_request_headers_carry_a_verifiable_signature() -> None:
    h = signing.request_headers("m1", SECRET, "GET", "/v1/machines/m1/config", b"", now=1700000000.9)
    assert h["X-Machine-Id"] == "m1" and h["X-Timestamp"] == "1700000000"
    assert len(h["X-Nonce"]) == 32
    assert signing.verify_request(SECRET, "GET", "/v1/machines/m1/config", h["X-Timestamp"],
                                  h["X-Nonce"], b"", h["X-Signature"])
    assert h["X-Nonce"] != signing.request_headers("m1", SECRET, "GET", "/", b"", now=0)["X-Nonce"]


def test_command_signature_golden_and_canonical_form() -> None:
    assert signing.sign_command(SECRET, COMMAND) == GOLDEN_COMMAND
    assert signing.canonical_command({"name": "vend", "command_id": "c1", "args": {"slot": "A1", "b": 1},
                                      "signature": "x"}) == \
        b'{"args":{"b":1,"slot":"A1"},"command_id":"c1","name":"vend"}'
    reordered = dict(reversed(list(COMMAND.items())), signature=GOLDEN_COMMAND)
    assert signing.verify_command(SECRET, reordered)


@pytest.mark.parametrize("change", [
    {"name": "unlock"}, {"args": {"slot": "A2"}}, {"command_id": "c2"},
    {"expires_at": "2099-01-01T00:00:00Z"}, {"extra": True},
])
def test_modified_command_fails_verification(change: dict) -> None:
    signed = dict(COMMAND, signature=GOLDEN_COMMAND)
    assert signing.verify_command(SECRET, signed)
    assert not signing.verify_command(SECRET, dict(signed, **change))


def test_unsigned_or_foreign_signed_command_fails() -> None:
    assert not signing.verify_command(SECRET, COMMAND)
    forged = dict(COMMAND, signature=signing.sign_command(b"attacker", COMMAND))
    assert not signing.verify_command(SECRET, forged)


def test_nonce_cache_refuses_replay_within_window_only() -> None:
    cache = signing.NonceCache(window_s=300)
    assert cache.check_and_add("m1", "n1", now=1000.0)
    assert not cache.check_and_add("m1", "n1", now=1100.0)
    assert cache.check_and_add("m2", "n1", now=1100.0)  # nonces are per machine
    # after twice the window the old timestamp is stale anyway, so the nonce may be forgotten
    assert cache.check_and_add("m1", "n1", now=1000.0 + 601)


def test_nonce_cache_is_bounded() -> None:
    cache = signing.NonceCache(max_per_machine=3)
    for i in range(5):
        assert cache.check_and_add("m1", f"n{i}", now=0)
    assert cache.check_and_add("m1", "n0", now=0)  # evicted oldest
    assert not cache.check_and_add("m1", "n4", now=0)

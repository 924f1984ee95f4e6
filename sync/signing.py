"""Request and command signing for the cloud link (HMAC-SHA256 with the per-machine secret).

Request signature: hex HMAC-SHA256(secret, METHOD \\n path-with-query \\n timestamp \\n nonce \\n
hex sha256(body)), where body is the *uncompressed* request body (empty for GET).
Command signature: hex HMAC-SHA256(secret, canonical JSON of the command without `signature`).

Everything here is pure: time is passed in, nothing does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

TIMESTAMP_WINDOW_S = 300
HEADER_MACHINE = "X-Machine-Id"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"


def body_digest(body: bytes) -> str:
    """Hex SHA-256 of the (uncompressed) request body."""
    return hashlib.sha256(body).hexdigest()


def canonical_request(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The exact bytes a request signature covers."""
    return "\n".join((method.upper(), path_qs, timestamp, nonce, body_digest(body))).encode()


def sign_request(secret: bytes, method: str, path_qs: str, timestamp: str, nonce: str,
                 body: bytes) -> str:
    """Hex HMAC-SHA256 over `canonical_request`."""
    msg = canonical_request(method, path_qs, timestamp, nonce, body)
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def verify_request(secret: bytes, method: str, path_qs: str, timestamp: str, nonce: str,
                   body: bytes, signature: str) -> bool:
    """Constant-time check of a request signature."""
    expected = sign_request(secret, method, path_qs, timestamp, nonce, body)
    return _same(expected, signature)


def new_nonce() -> str:
    """A random 128-bit nonce, hex."""
    return secrets.token_hex(16)


def request_headers(machine_id: str, secret: bytes, method: str, path_qs: str, body: bytes, *,
                    now: float, nonce: str | None = None) -> dict[str, str]:
    """All four auth headers for one request; `now` is the (skew-corrected) unix time."""
    ts = str(int(now))
    nonce = nonce or new_nonce()
    return {
        HEADER_MACHINE: machine_id,
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign_request(secret, method, path_qs, ts, nonce, body),
    }


def canonical_command(command: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a command: sorted keys, compact separators, UTF-8, no `signature`."""
    doc = {k: v for k, v in command.items() if k != "signature"}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_command(secret: bytes, command: Mapping[str, Any]) -> str:
    """Hex HMAC-SHA256 of `canonical_command(command)`."""
    return hmac.new(secret, canonical_command(command), hashlib.sha256).hexdigest()


def verify_command(secret: bytes, command: Mapping[str, Any]) -> bool:
    """True when the command's `signature` matches its other fields."""
    signature = command.get("signature")
    if not isinstance(signature, str):
        return False
    return _same(sign_command(secret, command), signature)


class NonceCache:
    """Nonces seen per machine, kept for the timestamp window, so a captured request cannot be
    replayed. Bounded: the oldest entries go first when `max_per_machine` is exceeded (a machine
    cannot legitimately send that many requests inside one window)."""

    def __init__(self, window_s: float = TIMESTAMP_WINDOW_S, max_per_machine: int = 100_000) -> None:
        self._window = window_s
        self._max = max_per_machine
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def check_and_add(self, machine_id: str, nonce: str, now: float) -> bool:
        """Record `nonce`; False when it was already seen inside the window (a replay)."""
        seen = self._seen.setdefault(machine_id, OrderedDict())
        self._expire(seen, now)
        if nonce in seen:
            return False
        # keep it for the whole window either side, since timestamps may be up to ±window off
        seen[nonce] = now + 2 * self._window
        while len(seen) > self._max:
            seen.popitem(last=False)
        return True

    @staticmethod
    def _expire(seen: OrderedDict[str, float], now: float) -> None:
        while seen:
            nonce, expires = next(iter(seen.items()))
            if expires > now:
                break
            del seen[nonce]


def _same(expected_hex: str, given: Any) -> bool:
    """Constant-time compare; anything that is not a printable-ASCII string simply does not match."""
    if not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(expected_hex.encode(), given.strip().lower().encode())

"""Offline authorization tokens (`VE1.<payload>.<signature>`) — pure parsing and claim checks.

The format is documented in docs/protocols/offline-token.md. Nothing here touches a clock, a key
store or a crypto library: the signature check is injected as a callable per key id
(`Verifier(message, signature) -> bool`), the time and the revocation list are arguments. Every
failure is a `TokenRejected` with one of the stable `REASONS`; any other exception escaping
`parse` is a bug (the fuzz tests hold us to that).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.core.errors import EdgeError

PREFIX = "VE1"
VERSION = 1
DEFAULT_MAX_TOKEN_BYTES = 1024
MAX_LIMIT = 10_000_000  # minor units; a token is a spending cap, not a blank cheque
REASONS = ("malformed", "too_large", "unknown_key", "bad_signature", "wrong_scope", "expired",
           "not_yet_valid", "revoked", "replayed", "wrong_currency", "unavailable")
KID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
SCOPE_RE = re.compile(r"^(machine|fleet):([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
FIELDS = frozenset({"v", "kid", "scope", "cust", "limit", "cur", "exp", "iat", "nonce"})
MAX_TIME = 2**40  # far beyond any sane expiry; keeps integers small and comparable

Verifier = Callable[[bytes, bytes], bool]
Signer = Callable[[bytes], bytes]


class TokenRejected(EdgeError):
    """A token that must not open the door; `reason` is one of REASONS, `detail` is for humans."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says. `limit` is in minor units of `currency`; times are unix seconds."""

    kid: str
    scope: str
    customer_ref: str
    limit: int
    currency: str
    expires_at: int
    issued_at: int
    nonce: str

    @property
    def scope_kind(self) -> str:
        return self.scope.partition(":")[0]

    @property
    def scope_name(self) -> str:
        return self.scope.partition(":")[2]

    def to_payload(self) -> dict[str, Any]:
        """The payload object in the token (short keys, see the protocol doc)."""
        return {"v": VERSION, "kid": self.kid, "scope": self.scope, "cust": self.customer_ref,
                "limit": self.limit, "cur": self.currency, "exp": self.expires_at,
                "iat": self.issued_at, "nonce": self.nonce}


@dataclass(frozen=True)
class Revocations:
    """The machine's revocation list: customer refs and key ids the cloud withdrew."""

    customers: frozenset[str] = field(default_factory=frozenset)
    kids: frozenset[str] = field(default_factory=frozenset)


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the exact bytes that are base64url-encoded and signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: one encoding per byte string, else `malformed`."""
    if not B64URL_RE.match(text) or len(text) % 4 == 1:
        raise TokenRejected("malformed", "not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenRejected("malformed", "not unpadded base64url") from exc
    if b64url_encode(data) != text:  # non-zero padding bits: a second spelling of the same bytes
        raise TokenRejected("malformed", "non-canonical base64url")
    return data


def signing_input(payload_b64: str) -> bytes:
    """What the signature covers: the prefix and the encoded payload, as in the token."""
    return f"{PREFIX}.{payload_b64}".encode("ascii")


def encode(claims: TokenClaims, sign: Signer) -> str:
    """Build a token string; `sign(message) -> 64-byte Ed25519 signature` is the issuer's key."""
    validate_payload(claims.to_payload())
    payload_b64 = b64url_encode(canonical_json(claims.to_payload()))
    return f"{PREFIX}.{payload_b64}.{b64url_encode(sign(signing_input(payload_b64)))}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise TokenRejected("malformed", f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise TokenRejected("malformed", f"non-finite number {name}")


def _load(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TokenRejected("malformed", "payload is not UTF-8 JSON") from exc
    if not isinstance(obj, dict):
        raise TokenRejected("malformed", "payload is not an object")
    return obj


def parse(token: object, verifiers: Mapping[str, Verifier], *,
          max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> TokenClaims:
    """Token string → claims whose signature checked out, or TokenRejected.

    Order: size, envelope, key id, signature, then the payload schema — so a tampered payload is
    reported as `bad_signature` whatever the change, and nothing unsigned is interpreted.
    """
    if not isinstance(token, str):
        raise TokenRejected("malformed", "not a string")
    if len(token.encode("utf-8", "surrogatepass")) > max_bytes:
        raise TokenRejected("too_large", f"more than {max_bytes} bytes")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenRejected("malformed", f"not a {PREFIX} token")
    payload, signature = b64url_decode(parts[1]), b64url_decode(parts[2])
    if len(signature) != 64:
        raise TokenRejected("malformed", "signature is not 64 bytes")
    obj = _load(payload)
    kid = obj.get("kid")
    if not isinstance(kid, str) or not KID_RE.match(kid):
        raise TokenRejected("malformed", "missing or invalid kid")
    verify = verifiers.get(kid)
    if verify is None:
        raise TokenRejected("unknown_key", f"kid {kid}")
    if not verify(signing_input(parts[1]), signature):
        raise TokenRejected("bad_signature", f"kid {kid}")
    try:
        canonical = canonical_json(obj)
    except ValueError as exc:  # e.g. 1e999 parsed to inf
        raise TokenRejected("malformed", "payload holds a non-finite number") from exc
    if canonical != payload:
        raise TokenRejected("malformed", "payload is not canonical JSON")
    return validate_payload(obj)


def _int(obj: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise TokenRejected("malformed", f"{key} must be an integer {lo}..{hi}")
    return value


def _str(obj: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise TokenRejected("malformed", f"invalid {key}")
    return value


def _customer(obj: Mapping[str, Any]) -> str:
    value = obj.get("cust")
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
        raise TokenRejected("malformed", "cust must be 1..64 printable characters")
    return value


def validate_payload(obj: Mapping[str, Any]) -> TokenClaims:
    """Schema of a payload object (exact keys, types, ranges) → TokenClaims."""
    if set(obj) != FIELDS:
        raise TokenRejected("malformed", f"payload keys must be {sorted(FIELDS)}")
    if _int(obj, "v", 0, 2**31) != VERSION:
        raise TokenRejected("malformed", f"unsupported version {obj.get('v')}")
    claims = TokenClaims(kid=_str(obj, "kid", KID_RE), scope=_str(obj, "scope", SCOPE_RE),
                         customer_ref=_customer(obj), limit=_int(obj, "limit", 0, MAX_LIMIT),
                         currency=_str(obj, "cur", CURRENCY_RE), expires_at=_int(obj, "exp", 1, MAX_TIME),
                         issued_at=_int(obj, "iat", 0, MAX_TIME), nonce=_str(obj, "nonce", NONCE_RE))
    if claims.expires_at <= claims.issued_at:
        raise TokenRejected("malformed", "exp must be after iat")
    return claims


def check(claims: TokenClaims, machine_id: str, fleet: str, now: float, revoked: Revocations, *,
          skew_s: float = 60.0) -> None:
    """May this machine accept these (signature-checked) claims at `now`? Raises TokenRejected.

    `skew_s` tolerates a machine clock that drifted while offline, in both directions.
    Replays are not judged here: the nonce store lives in the ledger (see edge.services.offline_auth).
    """
    kind, name = claims.scope_kind, claims.scope_name
    if not ((kind == "machine" and name == machine_id) or (kind == "fleet" and fleet and name == fleet)):
        raise TokenRejected("wrong_scope", f"token for {claims.scope}, this is machine:{machine_id}"
                            + (f" in fleet:{fleet}" if fleet else ""))
    if claims.kid in revoked.kids:
        raise TokenRejected("revoked", f"key {claims.kid} revoked")
    if claims.customer_ref in revoked.customers:
        raise TokenRejected("revoked", f"customer {claims.customer_ref} revoked")
    if claims.issued_at > now + skew_s:
        raise TokenRejected("not_yet_valid", f"issued at {claims.issued_at}, now {int(now)}")
    if now >= claims.expires_at + skew_s:
        raise TokenRejected("expired", f"expired at {claims.expires_at}, now {int(now)}")


def nonce_keep_until(claims: TokenClaims, skew_s: float) -> float:
    """Until when the nonce must be remembered: past this, `check` rejects the token as expired."""
    return claims.expires_at + skew_s

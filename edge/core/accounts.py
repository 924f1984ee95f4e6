"""Technician accounts, pure rules: roles, the lockout backoff, what a new name and password must be.

The flows that apply them (hashing, login, sessions) are in `edge.services.accounts`; the rows are in
`edge.ledger.users`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.core.errors import EdgeError

ROLES = ("technician", "viewer", "kiosk")  # kiosk: the machine's own touchscreen app (sells only)
MAX_FAILURES = 5          # the 6th attempt after 5 failures is refused even with the right password
LOCK_BASE_S = 30.0        # first lock; doubles with every further failure
LOCK_MAX_S = 900.0
SESSION_TTL_S = 12 * 3600.0
MIN_PASSWORD_LEN = 10
MAX_NAME_LEN = 64


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


def lock_seconds(failures: int) -> float:
    """How long an account stays locked after `failures` consecutive failures (0 below the limit)."""
    if failures < MAX_FAILURES:
        return 0.0
    return float(min(LOCK_MAX_S, LOCK_BASE_S * 2.0 ** (failures - MAX_FAILURES)))


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise AuthError("bad_input", f"password must have at least {MIN_PASSWORD_LEN} characters")


def check_new_account(name: str, role: str, password: str) -> None:
    """A role we know, a name of letters, digits, '.', '-', '_' and a long enough password."""
    if role not in ROLES:
        raise AuthError("bad_input", f"role must be one of {ROLES}")
    if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum() or len(name) > MAX_NAME_LEN:
        raise AuthError("bad_input", f"name: letters, digits, '.', '-', '_' (max {MAX_NAME_LEN})")
    check_new_password(password)

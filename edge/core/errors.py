"""Root of the house exception tree for everything that is not a device (see drivers.errors)."""


class EdgeError(Exception):
    """Base for vendedge errors raised outside the drivers."""


class ConfigError(EdgeError):
    """A configuration value is missing, malformed or out of range. The message names the key."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"config error at '{key}': got {value!r}; allowed: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


class SaleRefused(EdgeError):
    """A sale cannot start. `reason` is a stable snake_case code shown to users and logged."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SyncError(EdgeError):
    """The cloud link failed or answered something we cannot use."""


class LedgerError(EdgeError):
    """The ledger cannot store a record (disk full, corrupt file)."""

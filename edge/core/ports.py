"""Small ports (typing.Protocol) between the edge services and their collaborators.

Drivers and the sync client satisfy them structurally; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Outbox priorities: lower drains first. Orders and alarms must never wait behind telemetry.
PRIORITY = {"order": 0, "alarm": 0, "command_result": 1, "stock": 1, "audit": 2, "event": 2, "dex_read": 2,
            "telemetry": 5}


@dataclass(frozen=True)
class OutboxRecord:
    """One record for the cloud. `record_id` is stable across retries; `seq` is the machine's
    monotonic sequence number (ordering survives clock jumps)."""

    record_id: str
    seq: int
    kind: str
    created_at: str  # UTC ISO-8601
    payload: Mapping[str, Any]
    priority: int = 2


@dataclass(frozen=True)
class Command:
    """A command from the cloud, already signature-checked by the sync client."""

    command_id: str
    name: str
    args: Mapping[str, Any]
    issued_at: str
    expires_at: str | None = None


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    status: str  # "ok" | "rejected" | "failed" | "duplicate"
    detail: Mapping[str, Any] = field(default_factory=dict)


class OutboxPort(Protocol):
    async def fetch_batch(self, limit: int, max_bytes: int) -> list[OutboxRecord]:
        """Unacked, unparked records, priority first then seq; at most limit/max_bytes."""
        ...

    async def ack(self, record_ids: list[str]) -> None: ...

    async def park(self, record_id: str, reason: str) -> None:
        """The cloud rejected this record as invalid: set it aside (and alarm), never block the rest."""
        ...

    async def backlog(self) -> int: ...


class ConfigSink(Protocol):
    async def current_version(self) -> int: ...

    async def apply_config(self, version: int, doc: Mapping[str, Any]) -> None:
        """Validate fully, then apply atomically; raise ValueError (CatalogInvalid) to refuse."""
        ...

    async def config_rejected(self, version: int, reason: str) -> None: ...


class CommandSink(Protocol):
    async def handle(self, command: Command) -> CommandResult:
        """Apply at most once (ids kept in the ledger); a known id returns the stored result."""
        ...


class SyncLink(Protocol):
    """What the machine reads of its cloud link (the sync client satisfies it)."""

    @property
    def status(self) -> Mapping[str, Any]:
        """online, backlog, last_ack_at, last_error, ... for the diagnostics page."""
        ...

    def notify(self) -> None:
        """The outbox has new records: push soon."""
        ...


class Clock(Protocol):
    def now_iso(self) -> str: ...

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...


@dataclass(frozen=True)
class Authorization:
    """Money the customer's payment means has approved for one vend, recorded before any motor runs.
    `ref` goes on the order (`orders.payment_ref`) so a restart can tie the vend to the payment."""

    payment_id: str
    method: str
    amount: int  # minor units
    currency: str

    @property
    def ref(self) -> str:
        return f"{self.method}:{self.payment_id}"


class PaymentPort(Protocol):
    """A payment means the vend flow asks before it dispenses (e.g. an MDB card reader)."""

    async def authorize(self, slot_id: str, amount: int, currency: str) -> Authorization:
        """Approved and journaled, or raise SaleRefused ('payment_denied', 'payment_timeout', ...)."""
        ...

    async def settle(self, auth: Authorization, dispensed: bool | None) -> str:
        """After the drop sensor's verdict: True captures, False refunds; None (unknown) never captures.
        Returns the payment's state."""
        ...

    async def report_cash_sale(self, slot_id: str, amount: int, currency: str) -> None:
        """Tell the payment means about a sale paid otherwise (its audit counts every vend)."""
        ...

    async def recover(self) -> int:
        """Close payments a restart left open, from the ledger's record of their vends. Returns those left."""
        ...

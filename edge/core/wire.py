"""The wire between the machine and the cloud: outbox records, cloud commands and their results, and
the three ports the sync client needs from the machine (outbox, config sink, command sink).

Both sides import this one module — `edge` (ledger, services) and `sync` (client, transports,
reference cloud) — and neither imports the other's internals (`make lint` enforces it). The offline
token's encoding, the other thing both sides speak, is `edge.core.offline_token`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Outbox priorities: lower drains first. Orders and alarms must never wait behind telemetry.
PRIORITY = {
    "order": 0,
    "alarm": 0,
    "command_result": 1,
    "stock": 1,
    "audit": 2,
    "event": 2,
    "dex_read": 2,
    "telemetry": 5,
}


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

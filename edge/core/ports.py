"""Small ports (typing.Protocol) between the edge services and their collaborators.

Drivers and the sync client satisfy them structurally; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# The wire types shared with the cloud live in edge.core.wire; re-exported here for the machine's code.
from edge.core.wire import PRIORITY as PRIORITY
from edge.core.wire import Command as Command
from edge.core.wire import CommandResult as CommandResult
from edge.core.wire import CommandSink as CommandSink
from edge.core.wire import ConfigSink as ConfigSink
from edge.core.wire import OutboxPort as OutboxPort
from edge.core.wire import OutboxRecord as OutboxRecord


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

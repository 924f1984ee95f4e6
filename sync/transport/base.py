"""The transport interface of the cloud link: what `SyncClient` needs from a wire.

`SyncClient` keeps the semantics (outbox batches, per-record acks, parking, config versions,
command verification, the sink); a transport only moves the same protocol shapes
(`sync.protocol`) over HTTPS (`sync.transport.https`) or MQTT 5 (`sync.transport.mqtt`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edge.core.errors import SyncError
from edge.core.wire import CommandResult, OutboxRecord
from sync.protocol import Ack


class LinkDown(SyncError):
    """The cloud could not be reached or did not answer (as opposed to an answer we refuse)."""


class Backoff:
    """Capped exponential backoff with equal jitter: delay n is in [d/2, d], d = min(cap, base·2ⁿ)."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random) -> None:
        self._base, self._cap, self._rng, self._n = base_s, cap_s, rng, 0

    def next(self) -> float:
        delay = min(self._cap, self._base * float(2 ** min(self._n, 30)))
        self._n += 1
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def reset(self) -> None:
        self._n = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset (0: the last try succeeded)."""
        return self._n


class Transport(Protocol):
    """One wire to the cloud. Every method raises `LinkDown` when the cloud cannot be reached and
    `SyncError` for an answer it refuses; none of them retries on its own."""

    name: str

    @property
    def clock_offset_s(self) -> float:
        """Cloud clock − local clock as learnt from the cloud (0 when unknown)."""
        ...

    def on_link_up(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a kept link comes (back) up, so loops in backoff retry at once."""
        ...

    async def run(self) -> None:
        """Keep the link (MQTT: connect, subscribe, reconnect); returns only when cancelled."""
        ...

    async def push(self, records: Sequence[OutboxRecord], backlog: int) -> list[Ack]:
        """Send one batch; the cloud's acks (records missing from them stay in the outbox)."""
        ...

    async def fetch_config(self, known: int) -> tuple[int, dict[str, Any]] | None:
        """The cloud's config if its version differs from `known`, else None."""
        ...

    async def wait_config(self, timeout: float) -> None:
        """Sleep until a new config may be there (HTTPS: `timeout`; MQTT: a config message)."""
        ...

    async def poll_commands(self, wait_s: float) -> list[dict[str, Any]]:
        """Commands waiting for this machine (signed, unverified), waiting up to `wait_s`."""
        ...

    async def post_result(self, result: CommandResult) -> bool:
        """Report a command's result; False when the cloud does not know the command."""
        ...

    async def close(self) -> None:
        """Release the connection (MQTT: an explicit offline status first)."""
        ...

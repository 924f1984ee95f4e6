"""The machine side of the cloud link: outbox push, config pull and the command inbox.

Three named loops (`sync.push`, `sync.config`, `sync.commands`), each with its own capped,
jittered exponential backoff that resets on success, over one transport (`sync.transport`:
signed HTTPS requests by default, or MQTT 5). The client never interprets records, configs or
commands: the ledger's ports do.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from edge.core.errors import SyncError
from edge.core.wire import Command, CommandResult, CommandSink, ConfigSink, OutboxPort
from sync import signing
from sync.transport.base import Backoff, LinkDown, Transport
from sync.transport.https import HttpsTransport

__all__ = ["Backoff", "LinkDown", "SyncClient"]
log = structlog.get_logger(__name__)
MIN_POLL_INTERVAL_S = 1.0


def _iso_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class SyncClient:
    """Push the outbox, pull config, run cloud commands. `run()` until cancelled.

    `transport` is the wire (`sync.transport`); without one, signed HTTPS to `base_url`."""

    def __init__(self, base_url: str, machine_id: str, secret: bytes, outbox: OutboxPort,
                 config: ConfigSink, commands: CommandSink, *, batch_max_records: int = 500,
                 batch_max_bytes: int = 1_000_000, gzip_min_bytes: int = 2048,
                 poll_wait_s: float = 25, backoff_max_s: float = 60,
                 ca_file: str | None = None, client_cert: str | tuple[str, str] | None = None,
                 backoff_base_s: float = 0.5, config_interval_s: float = 60.0,
                 idle_push_s: float = 5.0, request_timeout_s: float = 30.0,
                 allow_insecure: bool = False, wall: Any = time.time,
                 rng: random.Random | None = None, transport: Transport | None = None) -> None:
        self._transport: Transport = transport or HttpsTransport(
            base_url, machine_id, secret, gzip_min_bytes=gzip_min_bytes, ca_file=ca_file,
            client_cert=client_cert, request_timeout_s=request_timeout_s,
            allow_insecure=allow_insecure, wall=wall)
        self.machine_id = machine_id
        self._secret = secret
        self._outbox, self._config, self._commands = outbox, config, commands
        self._batch_records, self._batch_bytes = batch_max_records, batch_max_bytes
        self._poll_wait = poll_wait_s
        self._config_interval, self._idle_push = config_interval_s, idle_push_s
        self._wall = wall
        self._rng = rng or random.Random()
        self._backoff = {name: Backoff(backoff_base_s, backoff_max_s, self._rng)
                         for name in ("push", "config", "commands")}
        self._wake = asyncio.Event()
        self._link_up = asyncio.Event()  # set when the link comes back: loops in backoff retry now
        self._refused_version: int | None = None
        self._online = False
        self._backlog = 0
        self._last_ack_at: str | None = None
        self._last_error: str | None = None
        self._parked_total = self._pushed_total = self._rejected_commands = 0
        self._config_version: int | None = None
        self._transport.on_link_up(self._link_ok)  # MQTT: a reconnect wakes the loops in backoff

    # public API --------------------------------------------------------------------------------
    @property
    def transport(self) -> str:
        """`https` or `mqtt`."""
        return self._transport.name

    @property
    def status(self) -> dict[str, Any]:
        """Link state for the diagnostics page."""
        return {"online": self._online, "backlog": self._backlog, "last_ack_at": self._last_ack_at,
                "last_error": self._last_error, "parked_total": self._parked_total,
                "pushed_total": self._pushed_total, "config_version": self._config_version,
                "rejected_commands": self._rejected_commands,
                "clock_offset_s": self._transport.clock_offset_s,
                "transport": self._transport.name}

    def notify(self) -> None:
        """The outbox has new records: wake the push loop now."""
        self._wake.set()

    async def run(self) -> None:
        """Run the three loops (and the transport's link task) until cancelled; the transport is
        closed on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._transport.run(), name=f"sync.link.{self._transport.name}")
                tg.create_task(self._loop("push", self._push_step), name="sync.push")
                tg.create_task(self._loop("config", self._config_step), name="sync.config")
                tg.create_task(self._loop("commands", self._commands_step), name="sync.commands")
        finally:
            await self.close()

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> SyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def push_once(self) -> int:
        """Push one batch; returns how many records were sent (0: outbox empty)."""
        self._wake.clear()
        records = await self._outbox.fetch_batch(self._batch_records, self._batch_bytes)
        if not records:
            self._backlog = await self._outbox.backlog()
            return 0
        acks = await self._transport.push(records, self._backlog)
        self._link_ok()
        sent = {r.record_id for r in records}
        done = [a.record_id for a in acks if a.status != "invalid" and a.record_id in sent]
        for a in acks:
            if a.status == "invalid" and a.record_id in sent:
                await self._outbox.park(a.record_id, a.reason or "invalid")
                self._parked_total += 1
                log.warning("sync_record_parked", record_id=a.record_id, reason=a.reason)
        if done:
            await self._outbox.ack(done)
            self._pushed_total += len(done)
            self._last_ack_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._backlog = await self._outbox.backlog()
        return len(records)

    async def pull_config_once(self) -> bool:
        """Fetch the config if it changed; True when a new version was applied."""
        current = await self._config.current_version()
        self._config_version = current
        known = max(current, self._refused_version or 0)
        fetched = await self._transport.fetch_config(known)
        self._link_ok()
        if fetched is None:
            return False
        version, doc = fetched
        if version in (current, self._refused_version):
            return False
        try:
            await self._config.apply_config(version, doc)
        except ValueError as exc:
            self._refused_version = version
            await self._config.config_rejected(version, str(exc))
            log.warning("sync_config_refused", version=version, reason=str(exc))
            return False
        self._config_version = version
        log.info("sync_config_applied", version=version, previous=current)
        return True

    async def poll_commands_once(self) -> int:
        """Wait for commands, hand verified ones to the sink, report every result."""
        raw = await self._transport.poll_commands(self._poll_wait)
        self._link_ok()
        for obj in raw:
            result = await self._handle_command(obj)
            await self._post_result(result)
        return len(raw)

    # loops -------------------------------------------------------------------------------------
    async def _push_step(self) -> int:
        sent = await self.push_once()
        if not sent:
            try:
                async with asyncio.timeout(self._idle_push):
                    await self._wake.wait()
            except TimeoutError:
                pass
        return sent

    async def _commands_step(self) -> int:
        t0 = asyncio.get_running_loop().time()
        handled = await self.poll_commands_once()
        # a cloud that answers an empty long-poll at once must not turn this into a busy loop
        idle = MIN_POLL_INTERVAL_S - (asyncio.get_running_loop().time() - t0)
        if not handled and idle > 0:
            await asyncio.sleep(idle)
        return handled

    async def _config_step(self) -> bool:
        applied = await self.pull_config_once()
        await self._transport.wait_config(self._config_interval)
        return applied

    async def _loop(self, name: str, step: Any) -> None:
        backoff = self._backoff[name]
        while True:
            try:
                await step()
            except LinkDown as exc:
                self._link_failed(name, exc)
                await self._backoff_sleep(backoff.next())
                continue
            except SyncError as exc:
                self._link_failed(name, exc)
                await asyncio.sleep(backoff.next())
                continue
            except Exception as exc:  # a bug or ledger failure must not end the loop
                log.exception("sync_loop_error", loop=name)
                self._last_error = f"{name}: {type(exc).__name__}: {exc}"
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()

    async def _backoff_sleep(self, delay: float) -> None:
        """Back off after a network failure, but retry at once when another loop reaches the cloud
        again: one loop's bad luck (or the outage that just ended) must not keep the others offline
        for up to `backoff_max_s`."""
        try:
            async with asyncio.timeout(delay):
                await self._link_up.wait()
        except TimeoutError:
            pass

    # commands ----------------------------------------------------------------------------------
    async def _handle_command(self, obj: Mapping[str, Any]) -> CommandResult:
        command_id = obj["command_id"]
        reason = None
        if not signing.verify_command(self._secret, obj):
            reason = "bad_signature"
        elif obj.get("expires_at") and _iso_ts(obj["expires_at"]) < self._now():
            reason = "expired"
        if reason is not None:
            self._rejected_commands += 1
            log.warning("sync_command_rejected", command_id=command_id, name=obj.get("name"),
                        reason=reason)
            return CommandResult(command_id, "rejected", {"reason": reason})
        cmd = Command(command_id=command_id, name=obj["name"], args=obj["args"],
                      issued_at=obj["issued_at"], expires_at=obj.get("expires_at"))
        try:
            return await self._commands.handle(cmd)
        except Exception as exc:  # the sink's failure is the command's result, not the link's
            log.exception("sync_command_failed", command_id=command_id, name=cmd.name)
            return CommandResult(command_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})

    async def _post_result(self, result: CommandResult) -> None:
        if not await self._transport.post_result(result):
            log.warning("sync_result_unknown_command", command_id=result.command_id)

    # link state --------------------------------------------------------------------------------
    def _now(self) -> float:
        return float(self._wall()) + self._transport.clock_offset_s

    def _link_ok(self) -> None:
        if not self._online:
            log.info("cloud_link_up", machine_id=self.machine_id, transport=self._transport.name)
            self._link_up.set()  # wake the loops sleeping in backoff
            self._link_up = asyncio.Event()
        self._online = True

    def _link_failed(self, loop: str, exc: Exception) -> None:
        self._last_error = f"{loop}: {exc}"
        if self._online:
            log.warning("cloud_link_down", loop=loop, error=str(exc))
        else:
            log.debug("cloud_link_still_down", loop=loop, error=str(exc))
        self._online = False

"""The machine side of the cloud link: outbox push, config pull and the command inbox.

Three named loops (`sync.push`, `sync.config`, `sync.commands`), each with its own capped,
jittered exponential backoff that resets on success. Every request is signed (sync.signing) and
has a deadline. The client never interprets records, configs or commands: the ledger's ports do.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import random
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from edge.core.errors import ConfigError, SyncError
from edge.core.ports import Command, CommandResult, CommandSink, ConfigSink, OutboxPort
from sync import protocol, signing

log = structlog.get_logger(__name__)
MIN_POLL_INTERVAL_S = 1.0
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, json.JSONDecodeError,
                  UnicodeDecodeError, protocol.ProtocolInvalid)
# the peer closed a kept-alive connection as we reused it: not a sign that the cloud is down
STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


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


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _iso_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class SyncClient:
    """Push the outbox, pull config, run cloud commands. `run()` until cancelled."""

    def __init__(self, base_url: str, machine_id: str, secret: bytes, outbox: OutboxPort,
                 config: ConfigSink, commands: CommandSink, *, batch_max_records: int = 500,
                 batch_max_bytes: int = 1_000_000, gzip_min_bytes: int = 2048,
                 poll_wait_s: float = 25, backoff_max_s: float = 60,
                 ca_file: str | None = None, client_cert: str | tuple[str, str] | None = None,
                 backoff_base_s: float = 0.5, config_interval_s: float = 60.0,
                 idle_push_s: float = 5.0, request_timeout_s: float = 30.0,
                 allow_insecure: bool = False, wall: Any = time.time,
                 rng: random.Random | None = None) -> None:
        if not base_url.startswith("https://") and not (allow_insecure or _is_loopback(base_url)):
            raise ConfigError("sync.base_url", base_url, "https:// (plain http only on loopback)")
        self._base = base_url.rstrip("/")
        self.machine_id = machine_id
        self._secret = secret
        self._outbox, self._config, self._commands = outbox, config, commands
        self._batch_records, self._batch_bytes = batch_max_records, batch_max_bytes
        self._gzip_min = gzip_min_bytes
        self._poll_wait = poll_wait_s
        self._config_interval, self._idle_push = config_interval_s, idle_push_s
        self._timeout = request_timeout_s
        self._wall = wall
        self._rng = rng or random.Random()
        self._backoff = {name: Backoff(backoff_base_s, backoff_max_s, self._rng)
                         for name in ("push", "config", "commands")}
        self._ssl = self._ssl_context(base_url, ca_file, client_cert)
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._link_up = asyncio.Event()  # set when the link comes back: loops in backoff retry now
        self._offset = 0.0  # server clock - local clock, learnt from stale_timestamp answers
        self._refused_version: int | None = None
        self._online = False
        self._backlog = 0
        self._last_ack_at: str | None = None
        self._last_error: str | None = None
        self._parked_total = self._pushed_total = self._rejected_commands = 0
        self._config_version: int | None = None

    # public API --------------------------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any]:
        """Link state for the diagnostics page."""
        return {"online": self._online, "backlog": self._backlog, "last_ack_at": self._last_ack_at,
                "last_error": self._last_error, "parked_total": self._parked_total,
                "pushed_total": self._pushed_total, "config_version": self._config_version,
                "rejected_commands": self._rejected_commands, "clock_offset_s": self._offset}

    def notify(self) -> None:
        """The outbox has new records: wake the push loop now."""
        self._wake.set()

    async def run(self) -> None:
        """Run the three loops until cancelled; the HTTP session is closed on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._loop("push", self._push_step), name="sync.push")
                tg.create_task(self._loop("config", self._config_step), name="sync.config")
                tg.create_task(self._loop("commands", self._commands_step), name="sync.commands")
        finally:
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        path = protocol.machine_path(self.machine_id, "outbox")
        status, _, data = await self._request("POST", path, protocol.encode_push(records))
        if status != 200:
            raise SyncError(f"push answered HTTP {status}: {data[:200]!r}")
        acks = self._parse(protocol.parse_acks, data)
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
        headers = {"If-None-Match": protocol.etag(known)} if known > 0 else {}
        path = protocol.machine_path(self.machine_id, "config")
        status, _, data = await self._request("GET", path, extra_headers=headers)
        if status in (304, 404):
            return False
        if status != 200:
            raise SyncError(f"config answered HTTP {status}")
        version, doc = self._parse(protocol.parse_config, data)
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
        """Long-poll for commands, hand verified ones to the sink, post every result."""
        path = protocol.machine_path(self.machine_id, f"commands?wait={int(self._poll_wait)}")
        status, _, data = await self._request("GET", path,
                                              timeout=self._poll_wait + self._timeout)
        if status != 200:
            raise SyncError(f"commands answered HTTP {status}")
        raw = self._parse(protocol.parse_commands, data)
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
        await asyncio.sleep(self._config_interval)
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
        path = protocol.machine_path(self.machine_id, f"commands/{result.command_id}/result")
        body = json.dumps({"status": result.status, "detail": dict(result.detail)}).encode()
        status, _, _ = await self._request("POST", path, body)
        if status == 404:
            log.warning("sync_result_unknown_command", command_id=result.command_id)
        elif status != 200:
            raise SyncError(f"command result answered HTTP {status}")

    # transport ---------------------------------------------------------------------------------
    def _now(self) -> float:
        return float(self._wall()) + self._offset

    async def _request(self, method: str, path_qs: str, body: bytes = b"", *,
                       extra_headers: Mapping[str, str] | None = None,
                       timeout: float | None = None) -> tuple[int, Mapping[str, str], bytes]:
        """One signed request (re-signed once after a clock-skew answer)."""
        wire, encoding = await self._encode(body)
        def signed() -> dict[str, str]:
            headers = signing.request_headers(self.machine_id, self._secret, method, path_qs, body,
                                              now=self._now())
            headers["X-Backlog"] = str(self._backlog)
            headers.update(encoding)
            headers.update(extra_headers or {})
            return headers

        for attempt in range(2):
            status, resp_headers, data = await self._send(method, path_qs, wire, signed,
                                                          timeout or self._timeout)
            if status != 401:
                self._link_ok()
                return status, resp_headers, data
            err = self._parse(lambda d: d if isinstance(d, dict) else {}, data)
            if err.get("error") == "stale_timestamp" and isinstance(err.get("server_time"), int) \
                    and attempt == 0:
                self._offset = err["server_time"] - float(self._wall())
                log.warning("sync_clock_skew", offset_s=round(self._offset, 1))
                continue
            raise SyncError(f"cloud refused the request: {err.get('error', 'unauthorized')}")
        raise SyncError("cloud refused the request: stale_timestamp after resync")

    async def _encode(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        if not body or len(body) < self._gzip_min:
            return body, {"Content-Type": "application/json"} if body else {}
        # level 1: several times faster than 6 for JSON and only ~15 % larger
        packed = (gzip.compress(body, 1) if len(body) < 65536
                  else await asyncio.to_thread(gzip.compress, body, 1))
        return packed, {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    async def _send(self, method: str, path_qs: str, wire: bytes, signed: Any,
                    timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP exchange (`signed()` makes fresh signed headers). A kept-alive connection that
        the peer (proxy, load balancer, cloud) closed while it sat in the pool fails at once with
        ServerDisconnected / connection reset: that is retried immediately, re-signed (new nonce),
        on another connection instead of counting as an outage. Safe because every request of
        the protocol is idempotent: records by record_id, results by command_id, and commands
        are redelivered until their result is posted."""
        try:
            async with asyncio.timeout(timeout):
                for attempt in range(2):
                    try:
                        return await self._exchange(method, path_qs, wire, signed())
                    except aiohttp.ClientConnectorError:
                        raise  # a fresh connection failed: the cloud is unreachable
                    except STALE_CONNECTION_ERRORS as exc:
                        if attempt:
                            raise
                        log.debug("sync_request_retry_after_disconnect", method=method,
                                  path=path_qs.split("?")[0], error=f"{type(exc).__name__}: {exc}")
                raise AssertionError("unreachable")
        except NETWORK_ERRORS as exc:
            raise LinkDown(f"{method} {path_qs.split('?')[0]}: {type(exc).__name__}: {exc}") from exc

    async def _exchange(self, method: str, path_qs: str, wire: bytes,
                        headers: Mapping[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        async with self._get_session().request(method, self._base + path_qs, data=wire,
                                               headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()

    def _parse(self, fn: Any, data: bytes) -> Any:
        try:
            return fn(json.loads(data))
        except NETWORK_ERRORS as exc:
            raise SyncError(f"unreadable answer: {exc}") from exc

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True, limit=4)
            self._session = aiohttp.ClientSession(connector=connector,
                                                  timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    @staticmethod
    def _ssl_context(base_url: str, ca_file: str | None,
                     client_cert: str | tuple[str, str] | None) -> ssl.SSLContext | None:
        if not base_url.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cafile=ca_file)
        if isinstance(client_cert, tuple):
            ctx.load_cert_chain(*client_cert)
        elif client_cert:
            ctx.load_cert_chain(client_cert)
        return ctx

    def _link_ok(self) -> None:
        if not self._online:
            log.info("cloud_link_up", machine_id=self.machine_id)
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

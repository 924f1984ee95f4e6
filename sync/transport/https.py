"""The HTTPS transport (docs/protocols/sync.md): signed requests to `/v1/machines/{id}/…`.

Every request is signed (sync.signing) and has a deadline; a `stale_timestamp` answer teaches the
clock offset and the request is re-signed once.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from edge.core.errors import ConfigError, SyncError
from edge.core.wire import CommandResult, OutboxRecord
from sync import protocol, signing
from sync.transport.base import LinkDown

log = structlog.get_logger(__name__)
NETWORK_ERRORS = (
    aiohttp.ClientError,
    TimeoutError,
    OSError,
    json.JSONDecodeError,
    UnicodeDecodeError,
    protocol.ProtocolInvalid,
)
# the peer closed a kept-alive connection as we reused it: not a sign that the cloud is down
STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def is_loopback(url: str) -> bool:
    """True when the URL's host is localhost or a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_answer(fn: Any, data: bytes) -> Any:
    """`fn(json.loads(data))`; an unreadable answer is a SyncError."""
    try:
        return fn(json.loads(data))
    except NETWORK_ERRORS as exc:
        raise SyncError(f"unreadable answer: {exc}") from exc


class HttpsTransport:
    """Signed HTTP(S) requests to the reference cloud's /v1 API."""

    name = "https"

    def __init__(
        self,
        base_url: str,
        machine_id: str,
        secret: bytes,
        *,
        gzip_min_bytes: int = 2048,
        ca_file: str | None = None,
        client_cert: str | tuple[str, str] | None = None,
        request_timeout_s: float = 30.0,
        allow_insecure: bool = False,
        wall: Any = time.time,
    ) -> None:
        if not base_url.startswith("https://") and not (allow_insecure or is_loopback(base_url)):
            raise ConfigError("sync.base_url", base_url, "https:// (plain http only on loopback)")
        self._base = base_url.rstrip("/")
        self.machine_id = machine_id
        self._secret = secret
        self._gzip_min = gzip_min_bytes
        self._timeout = request_timeout_s
        self._wall = wall
        self._ssl = self._ssl_context(base_url, ca_file, client_cert)
        self._session: aiohttp.ClientSession | None = None
        self._offset = 0.0  # server clock - local clock, learnt from stale_timestamp answers
        self._backlog = 0

    @property
    def clock_offset_s(self) -> float:
        return self._offset

    def on_link_up(self, callback: Any) -> None:
        """Nothing to do: every answered request already counts as the link being up."""

    async def run(self) -> None:
        await asyncio.Event().wait()  # requests open connections on demand: nothing to keep up

    async def push(self, records: Sequence[OutboxRecord], backlog: int) -> list[protocol.Ack]:
        self._backlog = backlog
        path = protocol.machine_path(self.machine_id, "outbox")
        status, _, data = await self._request("POST", path, protocol.encode_push(list(records)))
        if status != 200:
            raise SyncError(f"push answered HTTP {status}: {data[:200]!r}")
        acks: list[protocol.Ack] = parse_answer(protocol.parse_acks, data)
        return acks

    async def fetch_config(self, known: int) -> tuple[int, dict[str, Any]] | None:
        headers = {"If-None-Match": protocol.etag(known)} if known > 0 else {}
        path = protocol.machine_path(self.machine_id, "config")
        status, _, data = await self._request("GET", path, extra_headers=headers)
        if status in (304, 404):
            return None
        if status != 200:
            raise SyncError(f"config answered HTTP {status}")
        config: tuple[int, dict[str, Any]] = parse_answer(protocol.parse_config, data)
        return config

    async def wait_config(self, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def poll_commands(self, wait_s: float) -> list[dict[str, Any]]:
        path = protocol.machine_path(self.machine_id, f"commands?wait={int(wait_s)}")
        status, _, data = await self._request("GET", path, timeout=wait_s + self._timeout)
        if status != 200:
            raise SyncError(f"commands answered HTTP {status}")
        commands: list[dict[str, Any]] = parse_answer(protocol.parse_commands, data)
        return commands

    async def post_result(self, result: CommandResult) -> bool:
        path = protocol.machine_path(self.machine_id, f"commands/{result.command_id}/result")
        body = json.dumps({"status": result.status, "detail": dict(result.detail)}).encode()
        status, _, _ = await self._request("POST", path, body)
        if status == 404:
            return False
        if status != 200:
            raise SyncError(f"command result answered HTTP {status}")
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # requests ----------------------------------------------------------------------------------
    def _now(self) -> float:
        return float(self._wall()) + self._offset

    async def _request(
        self,
        method: str,
        path_qs: str,
        body: bytes = b"",
        *,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One signed request (re-signed once after a clock-skew answer)."""
        wire, encoding = await self._encode(body)

        def signed() -> dict[str, str]:
            headers = signing.request_headers(
                self.machine_id, self._secret, method, path_qs, body, now=self._now()
            )
            headers["X-Backlog"] = str(self._backlog)
            headers.update(encoding)
            headers.update(extra_headers or {})
            return headers

        for attempt in range(2):
            status, resp_headers, data = await self._send(
                method, path_qs, wire, signed, timeout or self._timeout
            )
            if status != 401:
                return status, resp_headers, data
            err = parse_answer(lambda d: d if isinstance(d, dict) else {}, data)
            if (
                err.get("error") == "stale_timestamp"
                and isinstance(err.get("server_time"), int)
                and attempt == 0
            ):
                self._offset = err["server_time"] - float(self._wall())
                log.warning("sync_clock_skew", offset_s=round(self._offset, 1))
                continue
            raise SyncError(f"cloud refused the request: {err.get('error', 'unauthorized')}")
        raise SyncError("cloud refused the request: stale_timestamp after resync")

    async def _encode(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        if not body or len(body) < self._gzip_min:
            return body, {"Content-Type": "application/json"} if body else {}
        # level 1: several times faster than 6 for JSON and only ~15 % larger
        packed = (
            gzip.compress(body, 1) if len(body) < 65536 else await asyncio.to_thread(gzip.compress, body, 1)
        )
        return packed, {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    async def _send(
        self, method: str, path_qs: str, wire: bytes, signed: Any, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
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
                        log.debug(
                            "sync_request_retry_after_disconnect",
                            method=method,
                            path=path_qs.split("?")[0],
                            error=f"{type(exc).__name__}: {exc}",
                        )
                raise AssertionError("unreachable")
        except NETWORK_ERRORS as exc:
            raise LinkDown(f"{method} {path_qs.split('?')[0]}: {type(exc).__name__}: {exc}") from exc

    async def _exchange(
        self, method: str, path_qs: str, wire: bytes, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with self._get_session().request(
            method, self._base + path_qs, data=wire, headers=headers
        ) as resp:
            return resp.status, resp.headers, await resp.read()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True, limit=4)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session

    @staticmethod
    def _ssl_context(
        base_url: str, ca_file: str | None, client_cert: str | tuple[str, str] | None
    ) -> ssl.SSLContext | None:
        if not base_url.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cafile=ca_file)
        if isinstance(client_cert, tuple):
            ctx.load_cert_chain(*client_cert)
        elif client_cert:
            ctx.load_cert_chain(client_cert)
        return ctx

"""The MQTT 5 transport (docs/protocols/mqtt.md) over aiomqtt: the same records, acks, config
versions and signed commands as HTTPS, on an operator's broker.

One named task (`run`) owns the connection: connect with a persistent session (clean start off,
session expiry), subscribe to the machine's `ack`, `config` and `cmd` topics, publish the retained
birth status, then dispatch messages until the link drops; reconnect by re-entering the client's
context with capped, jittered backoff. The Last Will (retained `offline`) tells the fleet when the
machine vanishes without a goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.core.errors import ConfigError
from edge.core.wire import CommandResult, OutboxRecord
from sync import protocol
from sync.transport import mqtt_wire as wire
from sync.transport.base import Backoff, LinkDown
from sync.transport.https import is_loopback

log = structlog.get_logger(__name__)
# paho leaves Nagle on: a small publish (an ack, a batch) then waits for the peer's delayed ACK
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class MqttTransport:
    """One machine's MQTT 5 link. Username = client id = machine id; the password is derived from
    the machine secret (`mqtt_wire.machine_password`)."""

    name = "mqtt"

    def __init__(
        self,
        url: str,
        machine_id: str,
        secret: bytes,
        *,
        topic_prefix: str = wire.DEFAULT_PREFIX,
        keepalive_s: int = 30,
        session_expiry_s: int = 7 * 86400,
        ca_file: str | None = None,
        client_cert: str | tuple[str, str] | None = None,
        request_timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 10.0,
        allow_insecure: bool = False,
        wall: Any = time.time,
        rng: random.Random | None = None,
    ) -> None:
        try:
            self._host, self._port, tls = wire.broker_address(url)
        except ValueError as exc:
            raise ConfigError("sync.mqtt.url", url, "mqtts://host[:port] (mqtt:// only on loopback)") from exc
        if not tls and not (allow_insecure or is_loopback(url.replace("mqtt://", "http://", 1))):
            raise ConfigError("sync.mqtt.url", url, "mqtts:// (plain mqtt:// only on loopback)")
        self.machine_id = machine_id
        self._password = wire.machine_password(secret)
        self._prefix = topic_prefix
        self._keepalive, self._expiry = keepalive_s, session_expiry_s
        self._tls = self._ssl_context(ca_file, client_cert) if tls else None
        self._timeout = request_timeout_s
        self._wall = wall
        self._backoff = Backoff(backoff_base_s, backoff_max_s, rng or random.Random())
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[list[protocol.Ack]]] = {}
        self._commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._config: tuple[int, dict[str, Any]] | None = None
        self._config_changed = asyncio.Event()
        self._known_config = 0
        self._backlog = 0
        self._offset = 0.0
        self._said_offline = False
        self.connects = 0  # how many times the link came up (diagnostics, tests)
        self._link_listeners: list[Callable[[], None]] = []

    def _topic(self, leaf: str) -> str:
        return wire.topic(self._prefix, self.machine_id, leaf)

    @property
    def clock_offset_s(self) -> float:
        return self._offset

    @property
    def connected(self) -> bool:
        return self._client is not None

    # link task ---------------------------------------------------------------------------------
    def on_link_up(self, callback: Callable[[], None]) -> None:
        self._link_listeners.append(callback)

    async def run(self) -> None:
        """Connect, serve, reconnect — until cancelled."""
        while True:
            try:
                async with self._new_client() as client:
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self._link_lost(exc)
                await asyncio.sleep(self._backoff.next())

    def _new_client(self) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._expiry
        will = aiomqtt.Will(self._topic("status"), wire.encode_status("offline"), qos=1, retain=True)
        return aiomqtt.Client(
            self._host,
            self._port,
            username=self.machine_id,
            password=self._password,
            identifier=self.machine_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=False,
            keepalive=self._keepalive,
            properties=props,
            tls_context=self._tls,
            timeout=self._timeout,
            socket_options=NO_DELAY,
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe([(self._topic(leaf), 1) for leaf in wire.CLOUD_TO_MACHINE])
        birth = wire.encode_status("online", config_version=self._known_config, backlog=self._backlog)
        await client.publish(self._topic("status"), birth, qos=1, retain=True)
        self._client, self._said_offline = client, False
        self._connected.set()
        self._backoff.reset()
        self.connects += 1
        for listener in self._link_listeners:
            listener()
        log.info("mqtt_link_up", machine_id=self.machine_id, broker=f"{self._host}:{self._port}")
        try:
            async for message in client.messages:
                self._dispatch(str(message.topic), message.payload)
        except asyncio.CancelledError:
            await self._say_offline(client)
            raise
        finally:
            self._client = None
            self._connected.clear()

    def _dispatch(self, name: str, payload: Any) -> None:
        data = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        leaf = name.rsplit("/", 1)[-1]
        try:
            if leaf == "ack":
                self._on_ack(bytes(data))
            elif leaf == "config":
                self._on_config(bytes(data))
            elif leaf == "cmd":
                self._commands.put_nowait(wire.decode_command(bytes(data)))
        except wire.WireInvalid as exc:
            log.warning("mqtt_message_invalid", topic=name, reason=str(exc))

    def _on_ack(self, data: bytes) -> None:
        batch_id, acks, server_time = wire.decode_acks(data)
        fut = self._pending.get(batch_id)
        if fut is None or fut.done():
            return  # an ack for a batch we gave up on (re-sent since), queued in our session
        if server_time is not None:  # only a fresh answer teaches the clock offset
            self._offset = server_time - float(self._wall())
        fut.set_result(acks)

    def _on_config(self, data: bytes) -> None:
        if not data:
            return  # the retained config was cleared: keep what we have
        self._config = wire.decode_config(data)
        self._config_changed.set()

    def _link_lost(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkDown(f"mqtt link lost: {exc}"))
        first = self._backoff.attempts == 0
        (log.info if first else log.debug)("mqtt_link_down", machine_id=self.machine_id, error=str(exc))

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """A clean stop sends DISCONNECT, which discards the Will: say offline ourselves first."""
        if self._said_offline:
            return
        self._said_offline = True
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(2):
                await client.publish(self._topic("status"), wire.encode_status("offline"), qos=1, retain=True)

    def _require(self) -> aiomqtt.Client:
        if self._client is None:
            raise LinkDown(f"mqtt broker {self._host}:{self._port} not connected")
        return self._client

    # Transport ---------------------------------------------------------------------------------
    async def push(self, records: Sequence[OutboxRecord], backlog: int) -> list[protocol.Ack]:
        """Publish one batch (QoS 1) and wait for the cloud's ack message with its batch id."""
        client = self._require()
        self._backlog = backlog
        batch_id = uuid.uuid4().hex
        fut: asyncio.Future[list[protocol.Ack]] = asyncio.get_running_loop().create_future()
        self._pending[batch_id] = fut
        try:
            async with asyncio.timeout(self._timeout):
                await client.publish(
                    self._topic("outbox"), wire.encode_batch(batch_id, records, backlog), qos=1
                )
                return await fut
        except TimeoutError as exc:
            raise LinkDown(f"no ack for batch {batch_id} within {self._timeout:g} s") from exc
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"mqtt publish failed: {exc}") from exc
        finally:
            del self._pending[batch_id]

    async def fetch_config(self, known: int) -> tuple[int, dict[str, Any]] | None:
        """The retained config when it is newer than `known`; an older retained one is ignored
        (a broker restored from an old snapshot must not roll the machine back)."""
        self._known_config = known
        self._config_changed.clear()
        if self._config is None:
            self._require()
            return None
        version, doc = self._config
        if version == known:
            return None
        if version < known:
            log.warning("mqtt_config_older_than_machine", retained=version, machine=known)
            return None
        return version, doc

    async def wait_config(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._config_changed.wait()

    async def poll_commands(self, wait_s: float) -> list[dict[str, Any]]:
        out = []
        if self._commands.empty():
            self._require()
            try:
                async with asyncio.timeout(wait_s):
                    out.append(await self._commands.get())
            except TimeoutError:
                return []
        while not self._commands.empty():
            out.append(self._commands.get_nowait())
        return out

    async def post_result(self, result: CommandResult) -> bool:
        client = self._require()
        body = wire.encode_result(result.command_id, result.status, result.detail)
        try:
            await client.publish(self._topic("result"), body, qos=1, timeout=self._timeout)
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"mqtt publish failed: {exc}") from exc
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._say_offline(self._client)

    @staticmethod
    def _ssl_context(ca_file: str | None, client_cert: str | tuple[str, str] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca_file)
        if isinstance(client_cert, tuple):
            ctx.load_cert_chain(*client_cert)
        elif client_cert:
            ctx.load_cert_chain(client_cert)
        return ctx

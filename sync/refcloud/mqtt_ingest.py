"""The reference cloud on MQTT 5 (docs/protocols/mqtt.md): ingest workers on a shared subscription
and one control client, over the same store as the HTTPS API.

- `workers` ingest clients share `$share/vendedge-ingest/{prefix}/m/+/outbox` and `…/result`: each
  takes what is queued (up to `group_max` messages), validates every record exactly as the HTTPS
  push does, stores the group in one transaction (idempotent by (machine, record_id)) and only then
  publishes each batch's acks (QoS 1). A worker that dies before acking costs a re-send, never a
  double effect.
- The control client reads every machine's retained `status` (birth / Last Will) into the fleet
  view and, when a machine comes online with an older config or commands are pending, (re)publishes
  the retained config and the signed commands. Admin changes reach it through `CHANGE_LISTENERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog
from aiohttp import web
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync import signing
from sync.refcloud.app import CHANGE_LISTENERS, CLOCK, SECRETS, STORE, check_records, fill_acks, run_db
from sync.transport import mqtt_wire as wire
from sync.transport.base import Backoff
from sync.transport.mqtt import NO_DELAY

log = structlog.get_logger(__name__)
MQTT_CLOUD = web.AppKey("mqtt_cloud", object)
LONG_NUMBER = re.compile(rb"[0-9]{19}")  # no such run: no integer can exceed 64 bits (skips a walk)
ACK_PIPELINE = 4  # groups whose acks may be in flight per worker while the next group is stored
MAX_INFLIGHT = 1000  # QoS 1 publishes (acks) in flight per cloud client (paho's default is 20)


@dataclass(frozen=True)
class MqttCloudSettings:
    """How the cloud reaches the broker (its own user, not a machine's)."""

    url: str
    password: str
    username: str = wire.CLOUD_USER
    prefix: str = wire.DEFAULT_PREFIX
    workers: int = 2
    group_max: int = 500
    ca_file: str | None = None
    keepalive_s: int = 30
    client_prefix: str = "refcloud"  # unique per cloud process sharing one broker
    session_expiry_s: int = 3600  # how long the broker queues for an ingest worker that is away
    redeliver_s: float = 30.0  # commands without a result are published again this often


@dataclass
class _Batch:
    machine_id: str
    batch_id: str
    acks: list[dict[str, Any]]
    valid: list[Any]
    backlog: int | None


class MqttCloud:
    """Ingest workers + control client, started and stopped with the aiohttp app."""

    def __init__(self, app: web.Application, settings: MqttCloudSettings) -> None:
        self.app, self.s = app, settings
        self._host, self._port, self._tls = wire.broker_address(settings.url)
        self._tasks: list[asyncio.Task[None]] = []
        self._control: aiomqtt.Client | None = None
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._ack_tasks: dict[int, set[asyncio.Task[None]]] = {}
        self.stats = {
            "groups": 0,
            "batches": 0,
            "records": 0,
            "invalid_messages": 0,
            "results": 0,
            "births": 0,
            "wills": 0,
        }

    # lifecycle ---------------------------------------------------------------------------------
    async def start(self, _app: web.Application | None = None) -> None:
        self.app[CHANGE_LISTENERS].append(self.changed)
        for i in range(self.s.workers):
            self._tasks.append(
                asyncio.create_task(self._forever(self._ingest, i), name=f"refcloud.mqtt.ingest{i}")
            )
        self._tasks.append(
            asyncio.create_task(self._forever(self._control_loop, 0), name="refcloud.mqtt.control")
        )
        self._tasks.append(asyncio.create_task(self._publish_changes(), name="refcloud.mqtt.publish"))

    async def stop(self, _app: web.Application | None = None) -> None:
        # the workers, and the ack publishes they left in flight (their own tasks, `_send_acks`)
        acks = [t for pending in self._ack_tasks.values() for t in pending]
        for t in [*self._tasks, *acks]:
            t.cancel()
        await asyncio.gather(*self._tasks, *acks, return_exceptions=True)
        self._tasks.clear()
        self._ack_tasks.clear()

    def changed(self, machine_id: str) -> None:
        """A machine's config or commands changed: publish them (soon, from the control client)."""
        self._dirty.add(machine_id)
        self._dirty_event.set()

    def _client(self, role: str, *, persistent: bool) -> aiomqtt.Client:
        """A stable client id per role: a worker that reconnects (or a cloud that restarts) takes
        its session back — with what the broker queued for it meanwhile — instead of leaving a
        dead member in the shared-subscription group that messages would be routed to."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.s.session_expiry_s if persistent else 0
        client = aiomqtt.Client(
            self._host,
            self._port,
            username=self.s.username,
            password=self.s.password,
            identifier=f"{self.s.client_prefix}-{role}",
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=self.s.keepalive_s,
            clean_start=not persistent,
            max_inflight_messages=MAX_INFLIGHT,
            socket_options=NO_DELAY,
            properties=props,
            tls_context=ssl.create_default_context(cafile=self.s.ca_file) if self._tls else None,
        )
        client.pending_calls_threshold = MAX_INFLIGHT  # many acks in flight is the plan, not a leak
        return client

    async def _forever(self, body: Any, index: int) -> None:
        """Run `body` (connect + serve) again and again; a lost broker is logged once per outage."""
        backoff = Backoff(0.2, 2.0, random.Random())
        role = f"{body.__name__.strip('_')}{index}"
        while True:
            try:
                await body(index, backoff)
            except aiomqtt.MqttError as exc:
                first = backoff.attempts == 0
                (log.warning if first else log.debug)("refcloud_mqtt_link_down", role=role, error=str(exc))
            except Exception:  # a bug must not end ingest: log, back off, reconnect
                log.exception("refcloud_mqtt_worker_error", role=role)
            await asyncio.sleep(backoff.next())

    # ingest ------------------------------------------------------------------------------------
    async def _ingest(self, index: int, backoff: Backoff) -> None:
        async with self._client(f"ingest{index}", persistent=True) as client:
            await client.subscribe(
                [
                    (wire.shared_filter(self.s.prefix, "outbox"), 1),
                    (wire.shared_filter(self.s.prefix, "result"), 1),
                ]
            )
            backoff.reset()
            messages = client.messages
            while True:
                group = [await anext(messages)]
                while len(messages) and len(group) < self.s.group_max:
                    group.append(await anext(messages))
                await self._ingest_group(client, group)

    async def _ingest_group(self, client: aiomqtt.Client, group: Sequence[aiomqtt.Message]) -> None:
        batches: list[_Batch] = []
        results: list[tuple[str, str, str, dict[str, Any]]] = []
        known = self.app[SECRETS]
        for message in group:
            try:
                machine_id, leaf = wire.split_topic(self.s.prefix, str(message.topic))
                if machine_id not in known:
                    raise wire.WireInvalid(f"unknown_machine: {machine_id}")
                payload = _bytes(message.payload)
                if leaf == "outbox":
                    batch_id, backlog, raw = wire.decode_batch(payload)
                    acks, valid = check_records(raw, small_ints=LONG_NUMBER.search(payload) is None)
                    batches.append(_Batch(machine_id, batch_id, acks, valid, backlog))
                elif leaf == "result":
                    results.append((machine_id, *wire.decode_result(payload)))
            except wire.WireInvalid as exc:
                self.stats["invalid_messages"] += 1
                log.warning("refcloud_mqtt_message_invalid", topic=str(message.topic), reason=str(exc))
        now = self.app[CLOCK]()
        store = self.app[STORE]
        if batches:
            answers = await run_db(
                self.app, store.ingest_many, [(b.machine_id, b.valid, b.backlog) for b in batches], now
            )
            ack_messages = [
                (
                    wire.topic(self.s.prefix, b.machine_id, "ack"),
                    wire.encode_acks(b.batch_id, fill_acks(b.acks, st), int(now)),
                )
                for b, st in zip(batches, answers, strict=True)
            ]
            await self._send_acks(client, ack_messages)
            self.stats["groups"] += 1
            self.stats["batches"] += len(batches)
            self.stats["records"] += sum(len(b.acks) for b in batches)
        for machine_id, command_id, status, detail in results:
            if not await run_db(self.app, store.post_result, machine_id, command_id, status, detail, now):
                log.warning(
                    "refcloud_mqtt_result_unknown_command", machine_id=machine_id, command_id=command_id
                )
            self.stats["results"] += 1

    async def _send_acks(self, client: aiomqtt.Client, acks: list[tuple[str, bytes]]) -> None:
        """Publish a group's acks (stored already) while the next group is read and stored: at most
        `ACK_PIPELINE` groups' acks in flight per worker, so a slow broker slows ingest down."""
        pending = self._ack_tasks.setdefault(id(client), set())
        while len(pending) >= ACK_PIPELINE:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(
            _gather(*(client.publish(topic, body, qos=1) for topic, body in acks)), name="refcloud.mqtt.acks"
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    # control -----------------------------------------------------------------------------------
    async def _control_loop(self, _index: int, backoff: Backoff) -> None:
        async with self._client("control", persistent=False) as client:
            # not shared: the retained statuses come with the subscription, so a restarted cloud
            # learns at once who is online (and republishes what they miss)
            await client.subscribe(wire.topic(self.s.prefix, "+", "status"), qos=1)
            self._control = client
            backoff.reset()
            self._dirty_event.set()
            try:
                async for message in client.messages:
                    await self._on_status(client, message)
            finally:
                self._control = None

    async def _on_status(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        try:
            machine_id, _ = wire.split_topic(self.s.prefix, str(message.topic))
            state, config_version, backlog = wire.decode_status(_bytes(message.payload))
        except wire.WireInvalid as exc:
            log.warning("refcloud_mqtt_status_invalid", topic=str(message.topic), reason=str(exc))
            return
        if machine_id not in self.app[SECRETS]:
            return
        now = self.app[CLOCK]()
        await run_db(self.app, self.app[STORE].set_link, machine_id, "mqtt", state, now)
        self.stats["births" if state == "online" else "wills"] += 1
        log.info("machine_link", machine_id=machine_id, transport="mqtt", state=state)
        if state == "online":
            await run_db(self.app, self.app[STORE].seen, machine_id, now, backlog)
            await self._publish_machine(client, machine_id, config_version)

    async def _publish_changes(self) -> None:
        """Publish what admin changes made dirty at once; every `redeliver_s`, publish again the
        commands still without a result (a result or a command the broker dropped — e.g. across a
        restart, before the ingest workers re-subscribed — must not leave a command pending forever;
        the machine applies each id once and answers a repeat with its stored result)."""
        commands_only: set[str] = set()
        loop = asyncio.get_running_loop()
        sweep_at = loop.time() + self.s.redeliver_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, sweep_at - loop.time())):
                    await self._dirty_event.wait()
            if loop.time() >= sweep_at:
                sweep_at = loop.time() + self.s.redeliver_s
                pending = await run_db(
                    self.app, self.app[STORE].machines_with_pending_commands, self.app[CLOCK]()
                )
                commands_only.update(m for m in pending if m not in self._dirty)
            self._dirty_event.clear()
            client = self._control
            if client is None:
                continue  # set again when the control client connects
            todo = [*((m, True) for m in self._dirty), *((m, False) for m in commands_only - self._dirty)]
            self._dirty.clear()  # a change made while we publish marks the machine again
            commands_only.clear()
            for i, (machine_id, config) in enumerate(todo):
                try:
                    await self._publish_machine(client, machine_id, None, config=config)
                except aiomqtt.MqttError:
                    for m, c in todo[i:]:
                        (self._dirty if c else commands_only).add(m)
                    break

    async def _publish_machine(
        self, client: aiomqtt.Client, machine_id: str, has_version: int | None, *, config: bool = True
    ) -> None:
        """The retained config (when the machine's is older or unknown) and every pending command,
        signed with the machine's secret exactly as the HTTPS poll signs them."""
        store, now = self.app[STORE], self.app[CLOCK]()
        cfg = await run_db(self.app, store.config, machine_id) if config else None
        if cfg is not None and (has_version is None or has_version < cfg[0]):
            body = wire.encode_config(*cfg)
            await client.publish(wire.topic(self.s.prefix, machine_id, "config"), body, qos=1, retain=True)
        secret = self.app[SECRETS][machine_id]
        for command in await run_db(self.app, store.pending_commands, machine_id, now):
            command["signature"] = signing.sign_command(secret, command)
            body = wire.dumps(command)
            await client.publish(wire.topic(self.s.prefix, machine_id, "cmd"), body, qos=1)


async def _gather(*publishes: Any) -> None:
    """Publish acks; a lost link loses them, and the machines re-send after their ack timeout."""
    try:
        await asyncio.gather(*publishes)
    except aiomqtt.MqttError as exc:
        log.debug("refcloud_mqtt_acks_lost", error=str(exc))


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


def install(app: web.Application, settings: MqttCloudSettings) -> MqttCloud:
    """Run the MQTT side with this app: started on startup, stopped on shutdown (before the store
    closes)."""
    cloud = MqttCloud(app, settings)
    app[MQTT_CLOUD] = cloud
    app.on_startup.append(cloud.start)
    app.on_shutdown.append(cloud.stop)
    return cloud

"""Composition root: config → objects → supervised tasks. The only place that wires things together."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import pathlib
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from drivers.vend_board import VendBoard
from edge import __version__
from edge.clock import ScaledClock, SystemClock
from edge.config import Config, Secrets
from edge.core.catalog import Planogram
from edge.core.errors import ConfigError
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.ledger.outbox import LedgerOutbox
from edge.sdnotify import notify, watchdog_interval_s
from edge.services.cloud import CommandInbox, LedgerConfigSink, standard_handlers
from edge.services.machine import Machine
from edge.services.maintenance import SlotTrends
from edge.services.plant import Plant, start_plant
from edge.services.pricing import PriceBook
from edge.services.retention import Retention, RetentionPolicy
from edge.services.stock import StockService
from edge.services.vend import VendService
from edge.supervisor import Supervisor, ledger_alarms
from sync import signing
from sync.client import SyncClient

if TYPE_CHECKING:
    from edge.services.payment_mdb import MdbPayment
    from edge.services.takeandgo import TakeAndGoService

log = structlog.get_logger(__name__)

BOARD_WATCH_STALE_S = 30.0  # the board watch turns every 0.2 s; a DB write may take a while
WATCHDOG_CHECK_S = 5.0  # how often heartbeats are checked when systemd runs no watchdog


class Daemon:
    """Owns the ledger, the drivers, the services and the supervisor for one machine."""

    def __init__(self, config: Config, secrets: Secrets | None = None, *, clock: SystemClock | None = None,
                 time_scale: float = 1.0) -> None:
        self.config = config
        sim = config.simulation  # [simulation]: a demo or simulator in another process sets the pace
        if clock is None and sim.active:
            clock = ScaledClock(sim.time_scale, sim.origin_unix or None, sim.start_wall or None)
            time_scale = sim.time_scale
        self.time_scale = time_scale  # simulated seconds per real second (demo scenarios); 1.0 on a machine
        self.secrets = secrets or Secrets()
        self.clock = clock or SystemClock()
        self.supervisor = Supervisor()
        self.machine: Machine | None = None
        self.db: LedgerDB | None = None
        self.board: VendBoard | None = None
        self.sync: SyncClient | None = None
        self.plant: Plant | None = None
        self.web_runner: Any = None
        self.takeandgo: TakeAndGoService | None = None
        self.inbox: CommandInbox | None = None
        self.payment: MdbPayment | None = None
        self._stopped = asyncio.Event()

    @property
    def ledger_path(self) -> str:
        return str(pathlib.Path(self.config.machine.data_dir) / "ledger.sqlite3")

    async def start(self) -> Machine:
        """Open the ledger, start devices, services and tasks; READY=1 when selling.

        Fail safe: whatever fails half-way, what was started is stopped — the door locked first — before
        the error propagates (a daemon that cannot start must not leave the door open)."""
        try:
            return await self._start()
        except BaseException as exc:
            log.error("daemon_start_failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await self.stop()
            except Exception:
                log.exception("daemon_stop_after_failed_start_failed")
            raise

    async def _start(self) -> Machine:
        cfg = self.config
        pathlib.Path(cfg.machine.data_dir).mkdir(parents=True, exist_ok=True)
        self.db = db = await LedgerDB.open(self.ledger_path, self.clock)
        self.supervisor.on_alarm = ledger_alarms(db)  # a task that keeps crashing is an alarm
        await self._seed_planogram(db)
        vb = cfg.vend_board
        self.board = VendBoard(vb.port, baudrate=vb.baudrate, reply_timeout_s=vb.reply_timeout_s,
                               retries=vb.retries, vend_timeout_s=vb.vend_timeout_s)
        self.supervisor.spawn("vend_board.link", self.board.run)  # reconnects and handshakes for ever
        self.plant = await start_plant(cfg, db, self.supervisor, board=self.board, clock=self.clock,
                                       time_scale=self.time_scale)
        payment = await self._start_payment(db)
        vend = VendService(db, self.board,
                           jam_disable_after=vb.jam_disable_after, guards=self.plant.guards(), payment=payment)
        vend.prices = PriceBook(db, clock=self.clock, tz=cfg.web.timezone)  # offline price rules
        self.slot_trends = SlotTrends(db)  # spiral run-time trends -> "service soon"
        vend.result_listeners.append(self.slot_trends.on_vend)
        await vend.load()
        self.machine = Machine(cfg.machine.id, db, self.board, vend, StockService(db))
        self.plant.register(self.machine.services)
        if payment is not None:
            self.machine.services.payment = payment
            self.supervisor.spawn("payment.mdb", self._payment_loop)
        async with db.tx() as tx:
            await tx.event("daemon_started", {"version": __version__})
        if cfg.sync.enabled:
            self._start_sync(db)
        if cfg.takeandgo.enabled:
            await self._start_takeandgo(db)
        if cfg.offline_auth.enabled:
            from edge.services.offline_auth import start_offline_auth

            self.machine.services.offline_auth = await start_offline_auth(cfg, db, self.machine, self.supervisor,
                                                                          self.inbox)
        if cfg.web.enabled:
            from edge.web.app import start_web

            # logins and sessions keep real time on a sped-up clock (a 12 h session is not 22 s at 2000x)
            session_clock = SystemClock() if self.time_scale != 1.0 else None
            self.web_runner = await start_web(self.machine, cfg.web, self.secrets, spawn=self.supervisor.spawn,
                                              session_clock=session_clock)
        limit_c = cfg.temperature.food_safety_limit_c if cfg.temperature else RetentionPolicy.haccp_limit_c
        self.retention = Retention(db, RetentionPolicy(retention_days=cfg.sync.retention_days,
                                                       budget_mb=cfg.sync.ledger_budget_mb,
                                                       haccp_limit_c=limit_c), self.clock)
        self.supervisor.spawn("ledger.retention", self.retention.run)
        self.supervisor.spawn("maintenance.slots", self.slot_trends.run)
        self.supervisor.spawn("vend.reconcile", self._reconcile_loop)
        self.supervisor.spawn("vend_board.watch", self._board_watch_loop, stale_after_s=BOARD_WATCH_STALE_S)
        self.supervisor.spawn("watchdog", self._watchdog_loop)
        self.machine.mode = "selling"
        notify("READY=1\nSTATUS=selling")
        log.info("daemon_ready", ledger=self.ledger_path, board=vb.port, time_scale=self.time_scale)
        return self.machine

    async def _start_payment(self, db: LedgerDB) -> MdbPayment | None:
        """[payment] method = "mdb": the card reader's driver and payment service (docs/protocols/mdb.md)."""
        pc = self.config.payment
        if pc.method != "mdb":
            return None
        if not pc.port:
            raise ConfigError("payment.port", "", 'the MDB adapter\'s tty when payment.method = "mdb"')
        from edge.services.payment_mdb import start_mdb_payment

        self.payment = await start_mdb_payment(pc, db)
        return self.payment

    async def _payment_loop(self) -> None:
        """Closes card payments left open once the vend journal is settled; sets a reset reader up again."""
        assert self.payment is not None and self.machine is not None
        vend = self.machine.vend
        await self.payment.run(lambda: vend.unreconciled == 0)

    def _start_sync(self, db: LedgerDB) -> None:
        """Outbox pusher, config puller and command inbox, one supervised task running all three loops."""
        assert self.machine is not None
        try:
            secret = bytes.fromhex(self.secrets.machine_secret)
        except ValueError:
            secret = b""
        if len(secret) < 16:
            raise ConfigError("secrets.machine_secret", "<hidden>",
                              "a hex string of at least 16 bytes when sync.enabled = true")
        inbox = CommandInbox(db)
        for name, handler in standard_handlers(self.machine).items():
            inbox.register(name, handler)
        self.inbox = inbox
        sc, transport, max_bytes = self.config.sync, None, 1_000_000
        if sc.transport == "mqtt":  # docs/protocols/mqtt.md
            from sync.transport.mqtt import MqttTransport

            transport = MqttTransport(sc.mqtt.url, self.config.machine.id, secret, topic_prefix=sc.mqtt.topic_prefix,
                                      keepalive_s=sc.mqtt.keepalive_s, session_expiry_s=sc.mqtt.session_expiry_s,
                                      ca_file=sc.mqtt.ca_file or None, backoff_max_s=sc.mqtt.reconnect_max_s,
                                      request_timeout_s=sc.mqtt.ack_timeout_s)
            max_bytes = sc.mqtt.max_message_bytes * 3 // 4  # room for the envelope and JSON escaping
        sink = LedgerConfigSink(db, self._apply_settings,  # price rules must carry the cloud's HMAC
                                verify_pricing=functools.partial(signing.verify_command, secret))
        self.sync = SyncClient(sc.url, self.config.machine.id, secret,
                               LedgerOutbox(db), sink, inbox,
                               batch_max_records=sc.batch_max_records, batch_max_bytes=max_bytes,
                               poll_wait_s=sc.poll_wait_s, ca_file=sc.ca_file or None,
                               config_interval_s=sc.config_interval_s, backoff_max_s=sc.retry_max_s,
                               request_timeout_s=sc.request_timeout_s,
                               transport=transport)
        db.outbox_listeners.append(self.sync.notify)
        self.machine.services.sync = self.sync
        self.supervisor.spawn("sync", self.sync.run)

    async def _start_takeandgo(self, db: LedgerDB) -> None:
        """Cameras + recognizer + door + shelves. A missing model disables take-and-go with an alarm;
        classic vending keeps working."""
        from edge.services.takeandgo_setup import build_takeandgo

        assert self.machine is not None
        self.takeandgo = await build_takeandgo(self.config, db, self.plant, self.clock)
        self.machine.services.takeandgo = self.takeandgo
        self.takeandgo.prices = self.machine.vend.prices  # the same price book as the spirals
        self.supervisor.spawn("takeandgo", self.takeandgo.run)
        if self.inbox is not None:
            self.inbox.register("open_session", self._open_session_command)
        enrollment = self.takeandgo.enrollment  # products: enrollment, missing-prototype check
        if enrollment is not None:
            self.machine.services.enrollment = enrollment
            self.supervisor.spawn("enrollment", enrollment.run)
            if self.inbox is not None:
                self.inbox.register("enroll_product", enrollment.command)

    async def _open_session_command(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        assert self.takeandgo is not None
        limit = args.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise ValueError("limit must be a non-negative integer of minor units")
        return await self.takeandgo.open_session(str(args["session_id"]), str(args.get("customer_ref", "")),
                                                 limit)

    async def _apply_settings(self, settings: Mapping[str, Any]) -> None:
        """Cloud settings go to the service that owns them; unknown keys are logged, not fatal."""
        temperature = self.machine.services.temperature if self.machine else None
        if "setpoint_c" in settings and temperature is not None:
            await temperature.set_setpoint(float(settings["setpoint_c"]))
        unknown = set(settings) - {"setpoint_c"}
        if unknown:
            log.warning("settings_ignored", keys=sorted(unknown))

    async def _seed_planogram(self, db: LedgerDB) -> None:
        if await repo.current_planogram(db) is not None or not self.config.machine.planogram_file:
            return
        planogram = Planogram.from_doc(json.loads(pathlib.Path(self.config.machine.planogram_file).read_text()))
        async with db.tx() as tx:  # version 0: any version the cloud sends replaces it
            await repo.apply_planogram(tx, dataclasses.replace(planogram, version=0), "seed_file")

    async def _reconcile_loop(self) -> None:
        """Settle open vends whenever the board is reachable; sales wait until it is done."""
        assert self.machine and self.board
        board = self.board
        await self.machine.vend.run_reconciler(lambda: board.connected)

    async def _board_watch_loop(self) -> None:
        """Losing the board is a safety event: alarm once, refuse sales (VendService checks), clear on return."""
        assert self.db and self.board
        heartbeat = self.supervisor.tasks["vend_board.watch"]
        was, incompatible, handshake = True, None, None
        while True:
            heartbeat.beat()
            now = self.board.connected
            if self.board.incompatible != incompatible:  # the board answers, but not as a v2 board
                incompatible = self.board.incompatible
                if self.machine is not None:
                    await self.machine.vend.board_incompatible(incompatible)
            if now and self.board.info is not handshake and self.machine is not None:
                handshake = self.board.info  # a new HELLO: never reuse a seq the board remembers
                await self.machine.vend.note_board_seq()
            if now != was:
                async with self.db.tx() as tx:
                    if now:
                        await repo.clear_alarm(tx, "device_offline:vend_board", "reconnected")
                    else:
                        await repo.raise_alarm(tx, "device_offline:vend_board", "device_offline",
                                               "vend board disconnected", severity="critical",
                                               data={"device": "vend_board"})
                log.warning("vend_board_link", connected=now)
                was = now
            await asyncio.sleep(0.2)

    async def _watchdog_loop(self) -> None:
        """Check every task's heartbeat (and clear restart alarms); systemd's watchdog is fed only while
        none is stale, so a hung task gets the daemon restarted instead of a machine that looks alive."""
        interval = watchdog_interval_s()
        await self.supervisor.watchdog(interval or WATCHDOG_CHECK_S, feed=interval is not None)

    async def stop(self) -> None:
        """SIGTERM path (and a failed start): refuse new sales and sessions → lock the door → let the
        vend in flight finish and be journaled → stop tasks → flush → close. A second call does nothing."""
        if self._stopped.is_set():
            return
        notify("STOPPING=1")
        door = self.plant.door if self.plant else None
        if self.machine:
            self.machine.mode = "stopping"
            self.machine.vend.accepting = False  # new sales are refused from here on
        if door is not None:  # while the buses still run; refuses unlocks, hence take-and-go sessions
            await door.shutdown_lock()
        if self.machine:
            await self.machine.vend.drain()  # an in-flight vend finishes and is recorded
        if self.web_runner is not None:
            await self.web_runner.cleanup()
        await self.supervisor.stop()
        if self.plant:
            await self.plant.stop()  # locks the door before anything else goes
        if self.takeandgo is not None:
            await self.takeandgo.close()
        if self.sync:
            await self.sync.close()
        if self.board:
            await self.board.stop()
        if self.payment:
            await self.payment.close()
        if self.db:
            async with self.db.tx() as tx:
                await tx.event("daemon_stopped", {}, sync=False)
            await self.db.close()
        self._stopped.set()
        log.info("daemon_stopped")

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()

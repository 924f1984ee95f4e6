"""Wiring for the cold chain and the door: config → Modbus hubs → services → supervised tasks.

`start_plant(...)` is called by the composition root (edge/daemon.py). It builds one `ModbusHub`
per `[modbus.<bus>]`, one device per `[modbus.<bus>.devices.<name>]`, picks the service for each
device by its `role` (a type-keyed table), watches every device for offline alarms, and builds the
`Door` on whichever device `door.source` names.
"""

from __future__ import annotations

import asyncio
import functools
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from drivers.modbus import ModbusDevice, ModbusHub, RegisterMap
from edge.clock import SystemClock
from edge.config import Config, ModbusBusConfig, ModbusDeviceConfig
from edge.core.alarms import DeviceOfflineRule, RuleState, SensorRule
from edge.core.shelves import StableSpec
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.door import Door, IoModuleDoor, VendBoardDoor
from edge.services.eco import EcoService, eco_config
from edge.services.maintenance import MaintenanceService
from edge.services.power import PowerService
from edge.services.registry import Services
from edge.services.shelves import WeightShelves
from edge.services.temperature import TemperatureService, apply_alarm_effects
from edge.supervisor import Supervisor

log = structlog.get_logger(__name__)

SaleGuard = Callable[[str, str], Awaitable[None]]


def load_map(spec: str) -> RegisterMap:
    """A builtin map name ("fridge_controller") or a path to a map file."""
    if spec.endswith(".toml") or "/" in spec:
        return RegisterMap.load(pathlib.Path(spec))
    return RegisterMap.builtin(spec)


class DeviceWatch:
    """Device-offline alarms for every Modbus device, and out-of-range alarms for plain sensors."""

    def __init__(self, db: LedgerDB, devices: dict[str, ModbusDevice], *, clock: SystemClock,
                 range_checked: set[str] | None = None) -> None:
        self.db, self.devices, self.clock = db, devices, clock
        self.range_checked = range_checked or set()  # device keys whose ranges another service owns
        self._rules = {k: DeviceOfflineRule(f"device_offline:{k}", k) for k in devices}
        self._states = {k: RuleState() for k in devices}
        self._sensor_states: dict[str, RuleState] = {}
        self._active_sensor_keys: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
        for key, dev in devices.items():
            dev.subscribe(functools.partial(self._enqueue, key))

    def _enqueue(self, key: str, dev: ModbusDevice) -> None:
        if not self._queue.full():
            self._queue.put_nowait(key)

    async def load(self) -> None:
        active = {a["alarm_key"] for a in await repo.active_alarms(self.db)}
        for k, rule in self._rules.items():
            self._states[k] = RuleState(active=rule.key in active)
        self._active_sensor_keys = {a for a in active if a.startswith("sensor:")}

    async def run(self) -> None:
        while True:
            key = await self._queue.get()
            await self.check(key)

    async def check(self, key: str) -> None:
        dev = self.devices[key]
        # a device that never answered since start is offline too, once it failed N polls
        up = dev.online or dev.failures < dev.offline_after
        now = self.clock.monotonic()
        self._states[key], effects = self._rules[key].evaluate(self._states[key], up, now)
        if dev.online and key not in self.range_checked:
            effects += self._range_effects(key, dev, now)
        if effects:
            async with self.db.tx() as tx:
                await apply_alarm_effects(tx, effects)

    def _range_effects(self, key: str, dev: ModbusDevice, now: float) -> list[Any]:
        effects: list[Any] = []
        for name, point in dev.regmap.points.items():
            if point.range is None or name not in dev.values:
                continue
            akey = f"sensor:{dev.name}.{name}"
            rule = SensorRule(akey, f"{dev.name}.{name}", point.range[0], point.range[1])
            prev = self._sensor_states.get(akey, RuleState(active=akey in self._active_sensor_keys))
            self._sensor_states[akey], eff = rule.evaluate(prev, float(dev.values[name]), now)
            effects += eff
        return effects

    def offline(self) -> list[str]:
        return sorted(k for k, s in self._states.items() if s.active)


@dataclass
class Plant:
    """Everything on the Modbus side plus the door; `guards()` feed VendService."""

    hubs: dict[str, ModbusHub]
    devices: dict[str, ModbusDevice]  # "bus.device" -> device
    watch: DeviceWatch
    temperature: TemperatureService | None = None
    shelves: WeightShelves | None = None
    door: Door | None = None
    power: PowerService | None = None
    maintenance: MaintenanceService | None = None
    eco: EcoService | None = None
    roles: dict[str, str] = field(default_factory=dict)

    def guards(self) -> list[SaleGuard]:
        guards: list[SaleGuard] = [self.temperature.food_safety_guard] if self.temperature else []
        return guards + ([self.power.guard] if self.power else [])

    def register(self, services: Services) -> None:
        """Put the plant and each of its services into the machine's typed registry."""
        services.plant = self
        services.temperature, services.shelves, services.door = self.temperature, self.shelves, self.door
        services.power, services.maintenance, services.eco = self.power, self.maintenance, self.eco

    def status(self) -> dict[str, Any]:
        return {"buses": {n: {"connected": h.connected, "counters": dict(h.counters)} for n, h in self.hubs.items()},
                "devices": {k: {"online": d.online, "last_error": d.last_error, "counters": dict(d.counters),
                                "poll_period_s": d.poll_period_s_measured} for k, d in self.devices.items()},
                "offline_alarms": self.watch.offline()}

    async def stop(self) -> None:
        """Lock the door (fail safe), then stop the buses. Call before the ledger closes."""
        if self.door is not None:
            await self.door.stop()
        for hub in self.hubs.values():
            await hub.stop()


def _build_hub(name: str, bus: ModbusBusConfig) -> ModbusHub:
    if bus.serial_port:
        return ModbusHub(name, serial_port=bus.serial_port, baudrate=bus.baudrate, timeout_s=bus.timeout_s,
                         retries=bus.retries, gap_ms=bus.gap_ms)
    return ModbusHub(name, host=bus.host, tcp_port=bus.tcp_port, timeout_s=bus.timeout_s, retries=bus.retries,
                     gap_ms=bus.gap_ms)


def _add_device(hub: ModbusHub, name: str, dc: ModbusDeviceConfig) -> ModbusDevice:
    return hub.add_device(name, dc.unit_id, load_map(dc.map), poll_interval_s=dc.poll_interval_s,
                          offline_after=dc.offline_after)


async def start_plant(config: Config, db: LedgerDB, supervisor: Supervisor, *, board: Any = None,
                      clock: SystemClock | None = None, time_scale: float = 1.0,
                      stuck_after_s: float | None = None) -> Plant:
    """Build and start the Modbus buses, the temperature/shelf services, device watch and the door.

    Raises MapError / ConfigError for bad maps or a door source that is not configured.
    """
    clock = clock or SystemClock()
    hubs: dict[str, ModbusHub] = {}
    devices: dict[str, ModbusDevice] = {}
    roles: dict[str, str] = {}
    for bus_name, bus in config.modbus.items():
        hub = hubs[bus_name] = _build_hub(bus_name, bus)
        for dev_name, dc in bus.devices.items():
            devices[f"{bus_name}.{dev_name}"] = _add_device(hub, dev_name, dc)
            roles[f"{bus_name}.{dev_name}"] = dc.role
    by_role = {role: devices[k] for k, role in roles.items()}  # one device per role on a machine
    fridge_keys = {k for k, r in roles.items() if r == "fridge"}
    plant = Plant(hubs, devices, DeviceWatch(db, devices, clock=clock, range_checked=fridge_keys), roles=roles)
    if "fridge" in by_role:
        dev = by_role["fridge"]
        plant.temperature = TemperatureService(db, dev, config.temperature, clock=clock, name=dev.name,
                                               stuck_after_s=stuck_after_s)
        await plant.temperature.load()
    if "weight_shelves" in by_role:
        spec = StableSpec(window_s=StableSpec().window_s * time_scale)  # the window is in clock seconds
        plant.shelves = WeightShelves(by_role["weight_shelves"], clock=clock, spec=spec)
    plant.door = _build_door(config, db, board, by_role, clock, time_scale)
    await plant.watch.load()
    for hub in hubs.values():  # a crashed poll loop: devices offline (alarms), then restarted with backoff
        supervisor.spawn(hub.poll_task_name, hub.run, stale_after_s=hub.stale_after_s,
                         progress=functools.partial(getattr, hub, "last_cycle"), on_crash=hub.mark_offline)
    supervisor.spawn("plant.device_watch", plant.watch.run)
    if plant.temperature is not None:
        supervisor.spawn(f"temperature.{plant.temperature.name}", plant.temperature.run)
    if plant.door is not None:
        door = plant.door
        supervisor.spawn("door", door.run, stale_after_s=door.stale_after_s,
                         progress=functools.partial(getattr, door, "last_cycle"))
        await door.start()
    if "io" in by_role:  # mains fail input, supply voltage, humidity (edge/services/power.py)
        plant.power = PowerService(db, by_role["io"], door=plant.door, clock=clock)
        await plant.power.load()
        supervisor.spawn("power", plant.power.run)
    if "fridge" in by_role:  # compressor run-length trend -> "service soon" (edge/services/maintenance.py)
        fridge = by_role["fridge"]
        plant.maintenance = MaintenanceService(db, fridge, door=plant.door, clock=clock, name=fridge.name)
        supervisor.spawn("maintenance", plant.maintenance.run)
    if plant.temperature is not None and config.temperature.eco:  # night/idle setback (edge/services/eco.py)
        plant.eco = EcoService(plant.temperature, eco_config(config.temperature), io=by_role.get("io"),
                               door=plant.door, clock=clock, tz=config.web.timezone)
        supervisor.spawn("eco", plant.eco.run)
    log.info("plant_started", buses=sorted(hubs), devices=sorted(devices), door=config.door.source)
    return plant


def _build_door(config: Config, db: LedgerDB, board: Any, by_role: dict[str, ModbusDevice],
                clock: SystemClock, time_scale: float) -> Door | None:
    from edge.core.errors import ConfigError

    source = config.door.source
    if source == "io_module":
        if "io" not in by_role:
            raise ConfigError("door.source", source, "a [modbus.<bus>.devices.<name>] with role = \"io\"")
        backend: Any = IoModuleDoor(by_role["io"])
    elif board is not None:
        backend = VendBoardDoor(board)
    else:
        return None
    tick_s = max(0.005, min(0.5, 20.0 / time_scale))  # check open-too-long every <= 20 clock seconds
    return Door(db, backend, config.door, clock=clock, time_scale=time_scale, tick_s=tick_s)

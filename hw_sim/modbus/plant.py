"""SimModbusPlant: the fridge's Modbus devices, served by real pymodbus servers over a pty or TCP.

Unit 1 fridge controller (FridgePhysics), unit 2 weight shelves (LoadCell per shelf, reading the
FridgeWorld), unit 3 door I/O module (lock, light, door switch). A tick task steps the physics on
a SimClock (`speed` x real time) and refreshes the register images; pymodbus `SimDevice` actions
catch the physics up when the tick task runs late under load (a reply never shows the plant older
than one tick: a real controller's registers are current when read), copy the images into the
server's registers on every request, apply writes, pace RTU replies by wire time, and inject the
scripted faults.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from ..physics import FridgePhysics
from ..world import FridgeWorld
from .link import PtyLink
from .slaves import FridgeControllerSlave, IoModuleSlave, SimSlave, WeightShelfSlave

TICK_S = 0.05  # real seconds between physics steps
PRODUCT_J_PER_G_K = 3.5  # drinks and food are mostly water
_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding",
             4: "input"}
_WRITE_FCS = frozenset({5, 6, 15, 16})


class SimClock:
    """Simulated seconds: `speed` x real time since start, plus any manual `advance`. With `origin_unix`
    it counts from that Unix time instead, so another process (a daemon whose `[simulation]` has the
    same origin and time_scale) reads the same simulated time."""

    def __init__(self, speed: float = 1.0, origin_unix: float | None = None) -> None:
        self.speed = speed
        self._origin = origin_unix
        self._t0 = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        if self._origin is not None:
            return (time.time() - self._origin) * self.speed + self._offset
        return (time.monotonic() - self._t0) * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


def wire_time_s(request: ModbusPDU, baudrate: int) -> float:
    """Time a request/reply pair occupies an RTU line: bytes x 10 bits / baud + one T3.5 gap."""
    fc, count = request.function_code, request.count
    if fc in (1, 2):
        req, resp = 8, 5 + math.ceil(count / 8)
    elif fc in (3, 4):
        req, resp = 8, 5 + 2 * count
    elif fc == 15:
        req, resp = 9 + math.ceil(len(request.bits) / 8), 8
    elif fc == 16:
        req, resp = 9 + 2 * len(request.registers), 8
    else:
        req, resp = 8, 8
    char_s = 10.0 / baudrate
    return (req + resp) * char_s + 3.5 * char_s


@dataclass
class _Faults:
    silent_requests: int = 0
    silent_until: float = 0.0
    crc_garbage: int = 0
    exc_code: int = 0
    exc_left: int = 0


@dataclass
class _Server:
    kind: str
    server: ModbusSerialServer | ModbusTcpServer
    link: PtyLink | None = None
    rx: dict[int, tuple[ModbusPDU, float]] = field(default_factory=dict)  # unit -> (request, arrival)


class SimModbusPlant:
    """Three Modbus slaves with physics, served over RTU (pty) and/or TCP. See module docstring."""

    def __init__(self, world: FridgeWorld, *, speed: float = 1.0, seed: int = 0, baudrate: int = 19200,
                 wire_timing: bool = True, extra_units: Mapping[int, str] | None = None,
                 clock_origin_unix: float | None = None) -> None:
        self.world = world
        self.clock = SimClock(speed, clock_origin_unix)
        self.baudrate = baudrate
        self.wire_timing = wire_timing
        self.fridge = FridgePhysics(setpoint_c=4.0, start_c=4.0, seed=seed)
        self.shelves = WeightShelfSlave(2, world.shelf_grams, shelves=max(len(world.shelves()), 1), seed=seed)
        self.io = IoModuleSlave(3, lambda: world.door_open, on_light=self._set_lights)
        self.slaves: dict[int, SimSlave] = {1: FridgeControllerSlave(1, self.fridge), 2: self.shelves, 3: self.io}
        for unit, kind in (extra_units or {}).items():  # more slaves on the line (benchmarks)
            self.slaves[unit] = self._make_slave(unit, kind, seed)
        self.faults: dict[int, _Faults] = {u: _Faults() for u in self.slaves}
        self._servers: list[_Server] = []
        self._inflight: set[asyncio.Task[object]] = set()  # pymodbus request handlers inside our action
        self._tick_task: asyncio.Task[None] | None = None
        self._last_tick = self.clock.now()
        self._stepped = dict.fromkeys(self.slaves, self._last_tick)  # unit -> sim time its physics is at

    def _make_slave(self, unit: int, kind: str, seed: int) -> SimSlave:
        if kind == "fridge_controller":
            return FridgeControllerSlave(unit, FridgePhysics(setpoint_c=4.0, start_c=4.0, seed=seed + unit))
        if kind == "weight_shelf":
            return WeightShelfSlave(unit, self.world.shelf_grams, seed=seed + unit)
        if kind == "io_module":
            return IoModuleSlave(unit, lambda: self.world.door_open)
        raise ValueError(f"unknown slave kind {kind!r}")

    # -- world helpers ---------------------------------------------------------------------------

    def open_door(self) -> bool:
        """A customer pulls the handle: refused (False) while the lock coil is on."""
        if self.io.locked:
            return False
        self.world.door_open = True
        self.world.version += 1
        return True

    def close_door(self) -> None:
        self.world.door_open = False
        self.world.version += 1

    # -- faults --------------------------------------------------------------------------------

    def silence(self, unit: int, *, polls: int | None = None, seconds: float | None = None) -> None:
        """Unit ignores the next `polls` requests, or all requests for `seconds` of real time."""
        f = self.faults[unit]
        if polls is not None:
            f.silent_requests = polls
        if seconds is not None:
            f.silent_until = time.monotonic() + seconds
        if polls is None and seconds is None:
            f.silent_until = math.inf

    def unsilence(self, unit: int) -> None:
        self.faults[unit].silent_requests, self.faults[unit].silent_until = 0, 0.0

    def crc_garbage(self, unit: int, n: int = 1) -> None:
        """The next n RTU replies of `unit` carry a bad CRC."""
        self.faults[unit].crc_garbage = n

    def exception(self, unit: int, code: int = ExcCodes.DEVICE_FAILURE, n: int = 1) -> None:
        """The next n requests to `unit` get a Modbus exception reply with `code`."""
        self.faults[unit].exc_code, self.faults[unit].exc_left = int(code), n

    def stick_sensor(self, point: str, value: float | None = None, *, unit: int = 1) -> None:
        """Freeze a point of a slave at its current (or the given) value, e.g. a stuck probe."""
        slave = self.slaves[unit]
        slave.stuck[point] = slave.image.get(point) if value is None else value
        slave.tick(0.0)

    def unstick_sensor(self, point: str, *, unit: int = 1) -> None:
        self.slaves[unit].stuck.pop(point, None)

    def _set_lights(self, on: bool) -> None:
        self.fridge.lights_on = on

    def fail_compressor(self, on: bool = True) -> None:
        self.fridge.compressor_failed = on

    def cut_mains(self) -> None:
        """Mains fails: the I/O module (on its backup supply) reports it; the compressor stops."""
        self.io.mains_ok = False
        self.fridge.powered = False

    def restore_mains(self, supply_v: float = 230.0) -> None:
        self.io.mains_ok, self.io.supply_v = True, supply_v
        self.fridge.powered = True

    async def unplug(self) -> None:
        """Pull the RS-485 adapter: the pty disappears (TCP servers stop listening)."""
        await self._shutdown_servers()

    async def _shutdown_servers(self) -> None:
        for s in self._servers:
            await s.server.shutdown()  # type: ignore[no-untyped-call]
            if s.link is not None:
                await s.link.stop()
        await asyncio.sleep(0)
        pending = [t for t in self._inflight if not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def replug(self) -> None:
        """Plug it back in: same link path, fresh servers."""
        old, self._servers = self._servers, []
        for s in old:
            if s.link is not None:
                await self.serve_rtu(s.link.path)

    # -- serving -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the physics tick task (serve_* call this)."""
        if self._tick_task is None or self._tick_task.done():
            self._last_tick = self.clock.now()
            self._stepped = dict.fromkeys(self.slaves, self._last_tick)
            self._tick_task = asyncio.create_task(self._tick_loop(), name="hw_sim.modbus.tick")

    async def serve_rtu(self, link_path: str) -> str:
        """Serve all units as RTU slaves on a fresh pty pair; the daemon opens `link_path`."""
        await self.start()
        link = PtyLink(link_path)
        await link.start()
        entry = _Server("rtu", None, link)  # type: ignore[arg-type]
        entry.server = ModbusSerialServer(
            self._sim_devices(entry, paced=self.wire_timing), port=link.sim_path, baudrate=self.baudrate,
            ignore_missing_devices=True, trace_packet=self._corrupt_rtu,
            trace_pdu=functools.partial(self._remember_request, entry))
        await entry.server.serve_forever(background=True)
        self._servers.append(entry)
        return link_path

    async def serve_tcp(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve all units behind a Modbus TCP gateway; returns the bound port."""
        await self.start()
        entry = _Server("tcp", None)  # type: ignore[arg-type]
        entry.server = ModbusTcpServer(self._sim_devices(entry, paced=False), address=(host, port),
                                       ignore_missing_devices=True)
        await entry.server.serve_forever(background=True)
        self._servers.append(entry)
        listener: Any = entry.server.transport  # an asyncio.Server for TCP
        return int(listener.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop servers, links and the tick task (and any reply still being paced)."""
        await self._shutdown_servers()
        self._servers = []
        task, self._tick_task = self._tick_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> SimModbusPlant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals -----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> None:
        """Step every slave's physics to the clock's now."""
        self._last_tick = now = self.clock.now()
        self._world_inputs()
        for slave in self.slaves.values():
            self._step(slave, now)

    def _world_inputs(self) -> None:
        """The fridge's inputs from the world: the door and the load on the shelves."""
        self.fridge.door_open = self.world.door_open
        grams = sum(self.world.shelf_grams(k) for k in self.world.shelves())
        self.fridge.product_heat_capacity_j_k = grams * PRODUCT_J_PER_G_K

    def _step(self, slave: SimSlave, now: float) -> None:
        """Step one slave's physics to `now`."""
        dt, self._stepped[slave.unit] = max(0.0, now - self._stepped.get(slave.unit, now)), now
        slave.tick(dt)

    def _sim_devices(self, entry: _Server, *, paced: bool) -> list[SimDevice]:
        devices = []
        for unit, slave in self.slaves.items():
            blocks = []
            for table in ("coil", "discrete", "holding", "input"):
                pts = [p for p in slave.image.regmap.points.values() if p.table == table]
                if table in ("coil", "discrete"):
                    data = [SimData(p.address, values=False, datatype=DataType.BITS,
                                    readonly=not p.writable) for p in pts]
                    blocks.append(data or [SimData(0, values=False, datatype=DataType.BITS, readonly=True)])
                else:
                    data = [SimData(p.address, count=p.width, datatype=DataType.REGISTERS, readonly=not p.writable)
                            for p in pts]
                    blocks.append(data or [SimData(0, datatype=DataType.INVALID)])
            action = functools.partial(self._action, entry, slave, paced)
            devices.append(SimDevice(unit, simdata=tuple(blocks), action=action))  # type: ignore[arg-type]
        return devices

    def _remember_request(self, entry: _Server, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            entry.rx[pdu.dev_id] = (pdu, time.monotonic())
        return pdu

    def _corrupt_rtu(self, sending: bool, data: bytes) -> bytes:
        if sending and data:
            f = self.faults.get(data[0])
            if f is not None and f.crc_garbage > 0:
                f.crc_garbage -= 1
                return data[:-1] + bytes([data[-1] ^ 0x5A])
        return data

    async def _action(self, entry: _Server, slave: SimSlave, paced: bool, fc: int, start: int, address: int,
                      count: int, registers: list[int], set_values: list[int] | list[bool] | None
                      ) -> ExcCodes | None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        is_echo = fc in _WRITE_FCS and set_values is None  # pymodbus re-reads after a write
        f = self.faults[slave.unit]
        if not is_echo:
            if f.silent_requests > 0 or time.monotonic() < f.silent_until:
                f.silent_requests = max(0, f.silent_requests - 1)
                raise NoSuchIdException(f"unit {slave.unit} is silenced")  # server stays quiet
            if paced and (rx := entry.rx.get(slave.unit)) is not None:
                # the reply leaves when the wire would have carried request + reply, counted from arrival
                await asyncio.sleep(rx[1] + wire_time_s(rx[0], self.baudrate) - time.monotonic())
            if f.exc_left > 0:
                f.exc_left -= 1
                return ExcCodes(f.exc_code)
        table = _FC_TABLE[fc]
        now = self.clock.now()
        if now - self._last_tick > TICK_S * self.clock.speed:
            self.tick()  # the tick task is late (a loaded loop): the reply must not show an old plant
        elif slave.fresh_s is not None and now - self._stepped.get(slave.unit, now) > slave.fresh_s:
            self._world_inputs()
            self._step(slave, now)  # a controller's registers show the instant they are read
        if set_values is not None:
            for name, value in slave.image.write(table, address, set_values):
                slave.on_write(name, value)
        self._fill(slave, table, start, registers)
        return None

    @staticmethod
    def _fill(slave: SimSlave, table: str, start: int, registers: list[int]) -> None:
        raw = slave.image.raw[table]
        if table in ("coil", "discrete"):  # bit blocks are packed 16 to a register
            bits = [bool(raw.get(start * 16 + i, 0)) for i in range(16 * len(registers))]
            registers[:] = SimUtils.bitsToRegisters(bits)
        else:
            for i in range(len(registers)):
                registers[i] = raw.get(start + i, 0)

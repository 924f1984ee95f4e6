"""One Modbus bus (RTU serial line or TCP gateway): one lock, one poll task, many slaves.

pymodbus does framing, CRC and transactions; this module adds what a bus with several slaves
needs: one request at a time with an inter-frame gap, polling by next-due time so a silent slave
only costs its own timeout (and is backed off), reconnect with capped backoff when the adapter
goes away, and typed errors from `drivers.errors`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from ..backoff import Backoff
from ..errors import DeviceDisconnected, DeviceError, DeviceFault, DeviceTimeout, ProtocolError
from .device import ModbusDevice
from .regmap import Block, Point, RegisterMap, Value, decode_block, decode_point, encode_point

log = structlog.get_logger(__name__)

RECONNECT_MIN_S = 0.1
_READ_FN = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}
# the function code a correct reply to each request carries (pymodbus does not check it for us)
_FN_CODE = {
    "read_coils": 1,
    "read_discrete_inputs": 2,
    "read_holding_registers": 3,
    "read_input_registers": 4,
    "write_coil": 5,
    "write_register": 6,
    "write_registers": 16,
}


class ModbusHub:
    """One physical bus. Create, `add_device(...)`, `await start()`; `await stop()` at shutdown."""

    def __init__(
        self,
        name: str,
        *,
        serial_port: str | None = None,
        baudrate: int = 19200,
        host: str | None = None,
        tcp_port: int = 502,
        timeout_s: float = 0.3,
        retries: int = 1,
        gap_ms: float = 2.0,
        reconnect_max_s: float = 5.0,
    ) -> None:
        if (serial_port is None) == (host is None):
            raise ValueError("give exactly one of serial_port= or host=")
        self.name = name
        self.serial_port, self.baudrate = serial_port, baudrate
        self.host, self.tcp_port = host, tcp_port
        self.timeout_s, self.retries = timeout_s, retries
        self.gap_s = gap_ms / 1000.0 if serial_port else 0.0  # TCP needs no silent interval
        self.reconnect_max_s = reconnect_max_s
        self.devices: dict[str, ModbusDevice] = {}
        self.counters: dict[str, int] = {
            k: 0
            for k in (
                "requests",
                "ok",
                "crashes",
                "timeouts",
                "crc_errors",
                "bad_replies",
                "exceptions",
                "connects",
                "disconnects",
                "bytes_tx",
                "bytes_rx",
            )
        }
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_frame_end = 0.0
        self._rx_seen = False
        self._last_rx = 0.0
        self._link_down_logged = False
        self._stopping = False
        self._running: asyncio.Task[Any] | None = None
        self.last_cycle = time.monotonic()  # monotonic time of the poll loop's last turn (a heartbeat)
        self._log = log.bind(bus=name)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def task_name(self) -> str | None:
        """Name of the running poll task (None when stopped), whoever started it."""
        task = self._running
        return task.get_name() if task is not None and not task.done() else None

    @property
    def poll_task_name(self) -> str:
        """The name a supervisor should give the task running `run()`."""
        return f"modbus.poll.{self.name}"

    @property
    def stale_after_s(self) -> float:
        """`last_cycle` moves at least this often while `run()` is healthy: the longest sleep of the
        loop (reconnect backoff, a backed-off device, a poll interval) or one full request, with margin."""
        longest = max(
            [self.reconnect_max_s, self.timeout_s * 2 + 2.5]
            + [max(d.poll_interval_s, d.max_backoff_s) for d in self.devices.values()]
        )
        return 2 * longest + 5.0

    def add_device(
        self,
        name: str,
        unit_id: int,
        regmap: RegisterMap,
        *,
        poll_interval_s: float = 1.0,
        offline_after: int = 3,
        max_backoff_s: float = 30.0,
    ) -> ModbusDevice:
        """Register a slave; it is polled every `poll_interval_s` once the hub runs."""
        if name in self.devices:
            raise ValueError(f"bus {self.name}: device {name!r} added twice")
        dev = ModbusDevice(
            self,
            name,
            unit_id,
            regmap,
            poll_interval_s=poll_interval_s,
            offline_after=offline_after,
            max_backoff_s=max_backoff_s,
        )
        self.devices[name] = dev
        return dev

    async def start(self) -> None:
        """Start the poll task 'modbus.poll.<name>' unsupervised (tests, tools). A daemon runs `run()`
        under its supervisor instead. Never raises when the adapter is absent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=self.poll_task_name)

    async def stop(self) -> None:
        """Stop polling (the task from `start()`, or a supervisor's task running `run()`) and close the port."""
        task, self._task = self._task or self._running, None
        self._stopping = True
        # pymodbus awaits with asyncio.wait_for, which on 3.11 can swallow a cancel that races a
        # reply; keep cancelling until the task is really gone (the flag ends the loop too).
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        self._stopping = False
        self._close_client()

    # -- poll loop ---------------------------------------------------------------------------

    def mark_offline(self, exc: BaseException) -> None:
        """The poll task died of an unexpected error: every device goes offline (their watchers raise
        the alarms), the link is closed so the restarted task begins from a clean connect."""
        self.counters["crashes"] += 1
        self._close_client()
        for d in self.devices.values():
            d._link_lost(f"poll task crashed: {type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """The poll loop: connect (with capped backoff), then poll each device when it is due.
        Returns after `stop()`; an unexpected exception ends it (its supervisor calls `mark_offline`)."""
        self._running = asyncio.current_task()
        backoff = Backoff(RECONNECT_MIN_S, max(RECONNECT_MIN_S, self.reconnect_max_s))
        while not self._stopping:
            self.last_cycle = time.monotonic()
            if not self.connected:
                if not await self._connect():
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
            if not self.devices:
                await asyncio.sleep(0.2)
                continue
            dev = min(self.devices.values(), key=lambda d: d.next_due)
            wait = dev.next_due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self._poll(dev)

    async def _poll(self, dev: ModbusDevice) -> None:
        started = time.monotonic()
        dev.counters["polls"] += 1
        try:
            values = await self.read_device(dev, retries=self.retries if dev.failures == 0 else 0)
        except DeviceDisconnected:
            self._link_lost()
        except DeviceError as exc:
            dev._poll_failed(exc, time.monotonic(), timeout=isinstance(exc, DeviceTimeout))
        else:
            dev._poll_succeeded(values, started)

    async def _connect(self) -> bool:
        self._close_client()
        if self.serial_port:
            client: AsyncModbusSerialClient | AsyncModbusTcpClient = AsyncModbusSerialClient(
                self.serial_port,
                baudrate=self.baudrate,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                name=f"modbus.{self.name}",
                trace_packet=self._trace,
            )
        else:
            assert self.host is not None
            client = AsyncModbusTcpClient(
                self.host,
                port=self.tcp_port,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                name=f"modbus.{self.name}",
                trace_packet=self._trace,
            )
        client.set_max_no_responses(1 << 30)  # a silent slave behind a gateway must not drop the link
        try:
            async with asyncio.timeout(self.timeout_s + 2.0):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            client.close()
            if not self._link_down_logged:
                self._log.warning(
                    "modbus_connect_failed", port=self.serial_port or f"{self.host}:{self.tcp_port}"
                )
                self._link_down_logged = True
            return False
        self._client = client
        self.counters["connects"] += 1
        self._link_down_logged = False
        self._log.info("modbus_connected", port=self.serial_port or f"{self.host}:{self.tcp_port}")
        now = time.monotonic()
        for d in self.devices.values():
            d.next_due = now
        return True

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _link_lost(self) -> None:
        self.counters["disconnects"] += 1
        self._log.warning("modbus_link_lost")
        self._link_down_logged = True
        self._close_client()
        for d in self.devices.values():
            d._link_lost()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.counters["bytes_tx"] += len(data)
        else:
            self._rx_seen = True
            self._last_rx = time.monotonic()  # the gap counts from when the reply arrived
            self.counters["bytes_rx"] += len(data)
        return data

    # -- requests ----------------------------------------------------------------------------

    async def read_device(self, dev: ModbusDevice, *, retries: int | None = None) -> dict[str, Value]:
        """Read every block of the device's map; the first failing block ends the read."""
        values: dict[str, Value] = {}
        for block in dev.regmap.blocks:
            rr = await self._request(
                dev, _READ_FN[block.table], block.start, retries=retries, count=block.count
            )
            values.update(
                decode_block(block, rr.bits if block.table in ("coil", "discrete") else rr.registers)
            )
        return values

    async def write_point(self, dev: ModbusDevice, p: Point, value: Value) -> Value:
        """Write a point, read it back, return the read-back value (DeviceFault on mismatch)."""
        raw = encode_point(p, value)
        if isinstance(raw, bool):
            await self._request(dev, "write_coil", p.address, raw)
        elif len(raw) == 1:
            await self._request(dev, "write_register", p.address, raw[0])
        else:
            await self._request(dev, "write_registers", p.address, raw)
        block = Block(p.table, p.address, p.width, (p,))
        rr = await self._request(dev, _READ_FN[p.table], p.address, count=p.width)
        back_raw: Any = bool(rr.bits[0]) if p.is_bit else list(rr.registers[: p.width])
        if back_raw != raw:
            back = decode_point(p, back_raw)
            raise DeviceFault(f"{dev.name}.{p.name}: wrote {value} but read back {back}")
        return decode_block(block, rr.bits if p.is_bit else rr.registers)[p.name]

    async def _request(
        self, dev: ModbusDevice, fn: str, *args: Any, retries: int | None = None, **kwargs: Any
    ) -> Any:
        attempts = 1 + (self.retries if retries is None else retries)
        last: DeviceError = DeviceTimeout("no attempt")
        for _ in range(attempts):
            try:
                return await self._request_once(dev, fn, *args, **kwargs)
            except (DeviceTimeout, ProtocolError) as exc:
                last = exc
        raise last

    async def _request_once(self, dev: ModbusDevice, fn: str, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                raise DeviceDisconnected(f"bus {self.name}: not connected")
            gap = self.gap_s - (time.monotonic() - self._last_frame_end)
            if gap > 0:
                await asyncio.sleep(gap)
            self.counters["requests"] += 1
            self._rx_seen = False
            try:
                async with asyncio.timeout(self.timeout_s * 2 + 0.5):  # pymodbus has its own timeout_s
                    rr = await getattr(client, fn)(*args, device_id=dev.unit_id, **kwargs)
            except (ConnectionException, OSError) as exc:
                raise DeviceDisconnected(f"bus {self.name}: {exc}") from exc
            except (ModbusIOException, TimeoutError) as exc:
                if not client.connected:
                    raise DeviceDisconnected(f"bus {self.name}: link lost") from exc
                if self._rx_seen:
                    self.counters["crc_errors"] += 1
                    raise ProtocolError(f"{dev.name}: garbled reply (bad CRC or framing)") from exc
                self.counters["timeouts"] += 1
                raise DeviceTimeout(f"{dev.name}: no reply within {self.timeout_s}s") from exc
            except ModbusException as exc:
                raise ProtocolError(f"{dev.name}: {exc}") from exc
            finally:
                self._last_frame_end = self._last_rx if self._rx_seen else time.monotonic()
        if rr.isError():
            self.counters["exceptions"] += 1
            raise DeviceFault(f"{dev.name}: {fn} answered with exception code {rr.exception_code}")
        self._check_reply(dev, fn, rr, kwargs.get("count"))
        self.counters["ok"] += 1
        return rr

    def _check_reply(self, dev: ModbusDevice, fn: str, rr: Any, count: int | None) -> None:
        """A reply with a valid CRC can still be the wrong answer (another function code, too few
        values): a confused gateway or firmware does that. It is a ProtocolError, never values."""
        want = _FN_CODE[fn]
        problem = None
        if rr.function_code != want:
            problem = f"function code {rr.function_code} in reply to {want} ({fn})"
        elif count is not None:
            got = len(rr.bits) if want in (1, 2) else len(rr.registers)
            if got < count:
                problem = f"{got} values in reply to a read of {count}"
        if problem is not None:
            self.counters["bad_replies"] += 1
            raise ProtocolError(f"{dev.name}: wrong reply: {problem}")

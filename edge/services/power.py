"""Mains power, supply voltage and humidity from the door I/O module (points `mains_ok`,
`supply_v`, `humidity_pct` of the io_module map).

Mains fail (confirmed by `edge.core.power`): sales stop at once (the sale guard), the door is
locked, the outage is written (event + critical alarm, both queued for the cloud) and the ledger
WAL is checkpointed, so what the machine knows is in the main file before the backup supply runs
out. Mains back: sales resume, the alarm clears and `mains_restored` carries the outage length.
The outage start is kept in the ledger (`edge.ledger.power`), so an outage that outlasts the backup supply
(the daemon dies and restarts on the returning mains) is still measured from its start.
Voltage and humidity: telemetry every `telemetry_s` (5 min: they change slowly; rows go to
telemetry_1min keyed by the period's first minute, and to the outbox) and threshold alarms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from drivers.errors import DeviceError
from drivers.modbus import ModbusDevice
from edge.clock import SystemClock, iso
from edge.core import power as pw
from edge.core.alarms import RuleState
from edge.core.errors import SaleRefused
from edge.ledger import power as power_rows
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.sample_queue import SampleQueue
from edge.services.temperature import _Minute, apply_alarm_effects

log = structlog.get_logger(__name__)

MAINS_ALARM = "mains_fail"


@dataclass(frozen=True)
class _Sample:
    wall: float
    mono: float
    mains_ok: bool | None
    supply_v: float | None
    humidity_pct: float | None


class PowerService:
    """Mains state, voltage and humidity of one I/O module. Run `run()` supervised."""

    def __init__(
        self,
        db: LedgerDB,
        device: ModbusDevice,
        *,
        door: Any = None,
        clock: SystemClock | None = None,
        limits: pw.PowerLimits | None = None,
        name: str = "io",
        telemetry_s: float = 300.0,
    ) -> None:
        self.db, self.device, self.door, self.name = db, device, door, name
        self.clock = clock or SystemClock()
        self.limits = limits or pw.PowerLimits()
        self.mains = pw.MainsState()
        self._wall_offset = 0.0  # wall - mono, to store the outage start as wall time
        self._rules = [*pw.voltage_rules(name, self.limits), pw.humidity_rule(name, self.limits)]
        self._states = {r.key: RuleState() for r in self._rules}
        self._samples: SampleQueue[_Sample] = SampleQueue(self._process, 10_000)
        self._minute: _Minute | None = None
        self.telemetry_s = telemetry_s
        self.last: dict[str, Any] = {"mains_ok": None, "supply_v": None, "humidity_pct": None}
        self.last_outage_s: float | None = None
        self.counters = {"outages": 0, "sales_refused_mains": 0, "lock_failures": 0}
        device.subscribe(self._on_poll)

    async def load(self) -> None:
        """An outage still open in the ledger (the daemon died in it) continues from its start."""
        active = {a["alarm_key"] for a in await repo.active_alarms(self.db)}
        for key in self._states:
            self._states[key] = RuleState(active=key in active)
        failed_wall = await power_rows.outage_started(self.db)
        if failed_wall is not None:
            mono = self.clock.monotonic() - (self.clock.wall() - failed_wall)
            self.mains = pw.MainsState(on_mains=False, failed_at=mono)

    async def run(self) -> None:
        await self._samples.run()

    async def drain(self) -> None:
        await self._samples.drain()

    def _on_poll(self, dev: ModbusDevice) -> None:
        v, ok = dev.values, dev.online

        def num(key: str) -> float | None:
            return float(v[key]) if ok and v.get(key) is not None else None

        mains = bool(v["mains_ok"]) if ok and "mains_ok" in v else None
        self._samples.offer(_Sample(self.clock.wall(), self.clock.monotonic(), mains, num("supply_v"), num("humidity_pct")))

    async def _process(self, s: _Sample) -> None:
        self._wall_offset = s.wall - s.mono
        if s.mains_ok is not None:
            self.last = {"mains_ok": s.mains_ok, "supply_v": s.supply_v, "humidity_pct": s.humidity_pct}
        self.mains, changes = pw.observe(self.mains, s.mains_ok, s.mono, self.limits)
        effects: list[Any] = []
        for rule in self._rules:
            reading = (
                s.humidity_pct
                if rule.kind == "humidity_high"
                else (s.supply_v if self.mains.on_mains else None)
            )
            self._states[rule.key], eff = rule.evaluate(self._states[rule.key], reading, s.mono)
            effects += eff
        flush = self._minute_roll(s)
        if effects or flush is not None:
            async with self.db.tx() as tx:
                await apply_alarm_effects(tx, effects)
                if flush is not None:
                    await self._write_minute(tx, flush)
        for change in changes:
            await (self._failed(change) if isinstance(change, pw.MainsFailed) else self._restored(change))

    def _minute_roll(self, s: _Sample) -> _Minute | None:
        minute = int(s.wall // self.telemetry_s * self.telemetry_s // 60)  # the period's first minute
        flush = self._minute if self._minute is not None and self._minute.minute != minute else None
        if self._minute is None or flush is not None:
            self._minute = _Minute(minute)
        self._minute.add("supply_v", s.supply_v)
        self._minute.add("humidity_pct", s.humidity_pct)
        return flush

    async def _write_minute(self, tx: Any, m: _Minute) -> None:
        summary = m.summary()
        if not summary:
            return
        minute_iso = iso(m.minute * 60)
        await power_rows.write_telemetry(tx, minute_iso, self.name, summary)
        await tx.outbox(
            "telemetry",
            {"minute": minute_iso, "device": self.name, "points": summary, "on_mains": self.mains.on_mains},
            record_id=f"telemetry-{self.name}-{minute_iso}",
        )

    async def _failed(self, e: pw.MainsFailed) -> None:
        """Sales already stop (the guard reads `self.mains`); lock, record, checkpoint."""
        at_wall = e.at + self._wall_offset
        log.warning("mains_failed", device=self.name, at=iso(at_wall))
        locked = await self._lock_door()
        async with self.db.tx() as tx:
            data = {"device": self.name, "failed_at": iso(at_wall), "door_locked": locked}
            await tx.event("mains_failed", data, severity="critical")
            await repo.raise_alarm(
                tx,
                MAINS_ALARM,
                "mains_fail",
                "mains power failed: sales stopped, door locked",
                severity="critical",
                data=data,
            )
            await power_rows.set_outage_started(tx, at_wall)
        await self.db.checkpoint()
        self.counters["outages"] += 1

    async def _lock_door(self) -> bool:
        if self.door is None:
            return False
        try:
            await self.door.lock()
            return True
        except (DeviceError, TimeoutError) as exc:  # the door module may be the one losing power
            self.counters["lock_failures"] += 1
            log.warning("mains_fail_lock_failed", error=str(exc))
            return False

    async def _restored(self, e: pw.MainsRestored) -> None:
        outage_s = round(e.outage_s, 1)
        log.warning("mains_restored", device=self.name, outage_s=outage_s)
        async with self.db.tx() as tx:
            data = {"device": self.name, "outage_s": outage_s, "restored_at": iso(e.at + self._wall_offset)}
            await tx.event("mains_restored", data, severity="warning")
            await repo.clear_alarm(tx, MAINS_ALARM, f"mains back after {outage_s:g} s")
            await power_rows.set_outage_started(tx, None)
        self.last_outage_s = outage_s

    async def guard(self, slot_id: str, sku_id: str) -> None:
        """Sale guard: nothing is sold on the backup supply (a vend could stop half-way)."""
        if self.mains.on_mains:
            return
        self.counters["sales_refused_mains"] += 1
        raise SaleRefused("mains_fail", "mains power failed: the machine is on its backup supply")

    def status(self) -> dict[str, Any]:
        return {
            "on_mains": self.mains.on_mains,
            **self.last,
            "last_outage_s": self.last_outage_s,
            "counters": dict(self.counters),
        }

"""Cold chain: the fridge controller's readings → history, 1-minute telemetry, alarms, food safety.

The Modbus device calls us after every poll (`subscribe`); the callback only queues a `Sample`
stamped with the service clock, and one task (`run`) does the rest, so the bus is never held up
by the ledger. Temperature rules and the lockout rule are pure (`edge.core.alarms`,
`edge.core.food_safety`); this module stores their effects.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.errors import DeviceError
from drivers.modbus import ModbusDevice
from edge.clock import SystemClock, iso
from edge.config import TemperatureConfig
from edge.core import food_safety as fs
from edge.core.alarms import Clear, Effect, Raise, RuleState, SensorRule, ThresholdRule
from edge.core.errors import SaleRefused
from edge.ledger import cold_chain, repo
from edge.ledger.db import LedgerDB, Tx
from edge.services.sample_queue import SampleQueue

log = structlog.get_logger(__name__)

LOCKOUT_ALARM = "food_safety_lockout"
_META_KEY = "food_safety_excursion"
SETPOINT_RETRY_S = 60.0


async def apply_alarm_effects(tx: Tx, effects: Iterable[Effect]) -> list[Effect]:
    """Store rule effects as ledger alarms (raise-once / clear-once); returns those that changed."""
    done: list[Effect] = []
    for e in effects:
        if isinstance(e, Raise):
            changed = await repo.raise_alarm(tx, e.key, e.kind, e.message, severity=e.severity, data=e.data)
        else:
            changed = await repo.clear_alarm(tx, e.key, e.message)
        if changed:
            done.append(e)
            log.log(30 if isinstance(e, Raise) else 20, "alarm_raised" if isinstance(e, Raise) else "alarm_cleared",
                    alarm=e.key)
    return done


@dataclass(frozen=True)
class Sample:
    """One poll of the fridge controller, stamped with the service clock."""

    wall: float
    mono: float
    online: bool
    cabinet: float | None
    evap: float | None
    compressor: bool | None
    defrost: bool | None
    setpoint: float | None
    sensor_fault: bool


class _Minute:
    """Running avg/min/max per point for one wall-clock minute."""

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.points: dict[str, list[float]] = {}  # name -> [sum, n, min, max]

    def add(self, name: str, value: float | None) -> None:
        if value is None or math.isnan(value):
            return
        acc = self.points.setdefault(name, [0.0, 0, value, value])
        acc[0] += value
        acc[1] += 1
        acc[2], acc[3] = min(acc[2], value), max(acc[3], value)

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: {"avg": round(s / n, 3), "min": round(lo, 3), "max": round(hi, 3)}
                for k, (s, n, lo, hi) in self.points.items()}


class TemperatureService:
    """Temperature history, telemetry, alarms, setpoint and the food-safety sale guard for one fridge."""

    def __init__(self, db: LedgerDB, device: ModbusDevice, config: TemperatureConfig, *,
                 clock: SystemClock | None = None, name: str = "fridge", history_s: float = 86400.0,
                 stuck_after_s: float | None = None) -> None:
        self.db, self.device, self.config, self.name = db, device, config, name
        self.clock = clock or SystemClock()
        self.limits = fs.Limits(config.food_safety_limit_c, config.food_safety_max_s, config.restock_grace_s)
        self.setpoint = config.setpoint_c
        self.history_s = history_s
        cap = min(500_000, int(history_s / max(device.poll_interval_s, 0.05)) + 1000)
        self._history: deque[tuple[float, float | None, float | None, bool | None]] = deque(maxlen=cap)
        self._samples: SampleQueue[Sample] = SampleQueue(self._process, 20_000)
        self._rules = self._make_rules(stuck_after_s)
        self._states: dict[str, RuleState] = {r.key: RuleState() for r in self._rules}
        self.safety = fs.State()
        self._persisted: dict[str, Any] = {"above_since": None, "grace_until": None}
        self._minute: _Minute | None = None
        self._last_restock_event = 0
        self._last_setpoint_try: float | None = None
        self._defrost_started: float | None = None
        self.defrost: dict[str, Any] = {"count": 0, "active": False, "last_started": None, "last_duration_s": None}
        self.max_cabinet_c: float | None = None
        self.counters = {"samples": 0, "dropped": 0, "minutes": 0, "lockouts": 0,
                         "sales_refused_food_safety": 0, "setpoint_writes": 0}
        device.subscribe(self._on_poll)

    def _make_rules(self, stuck_after_s: float | None) -> list[Any]:
        c, n = self.config, self.name
        probe = self.device.regmap.points.get("cabinet_temp_c")
        lo, hi = probe.range if probe is not None and probe.range else (-math.inf, math.inf)
        return [
            ThresholdRule(f"temp_high:{n}", "temperature_high", c.high_alarm_c, "high", c.high_alarm_delay_s,
                          c.hysteresis_c, severity="critical"),
            ThresholdRule(f"temp_low:{n}", "temperature_low", c.low_alarm_c, "low", c.high_alarm_delay_s,
                          c.hysteresis_c),
            SensorRule(f"sensor:{n}.cabinet_temp_c", f"{n}.cabinet_temp_c", lo, hi, stuck_after_s),
        ]

    # ---- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Restore alarm flags, the lockout and the excursion clock from the ledger (restart-safe)."""
        active = {a["alarm_key"] for a in await repo.active_alarms(self.db)}
        for key in self._states:
            self._states[key] = RuleState(active=key in active)
        locked = await cold_chain.food_safety_locked(self.db)
        mono, wall = self.clock.monotonic(), self.clock.wall()
        saved = await cold_chain.load_state(self.db, _META_KEY)

        def to_mono(w: float | None) -> float | None:
            return None if w is None else mono - (wall - w)

        self.safety = fs.State(locked=locked, locked_at=mono if locked else None,
                               above_since=to_mono(saved.get("above_since")), peak_c=saved.get("peak_c"),
                               grace_until=to_mono(saved.get("grace_until")))
        self._last_restock_event = await cold_chain.last_restock_event(self.db)
        self._persisted = self._excursion_doc()

    async def run(self) -> None:
        """Consume samples forever (a supervised task: 'temperature.<name>')."""
        await self._samples.run()

    async def drain(self) -> None:
        """Process every queued sample now, and the one `run` may be in the middle of (tests and the
        demo use it to stay in step)."""
        await self._samples.drain()

    # ---- intake ------------------------------------------------------------------------------

    def _on_poll(self, dev: ModbusDevice) -> None:
        v = dev.values
        ok = dev.online

        def num(key: str) -> float | None:
            x = v.get(key)
            return float(x) if ok and x is not None else None

        def flag(key: str) -> bool | None:
            return bool(v[key]) if ok and key in v else None

        s = Sample(self.clock.wall(), self.clock.monotonic(), ok, num("cabinet_temp_c"), num("evaporator_temp_c"),
                   flag("compressor_on"), flag("defrost_active"), num("setpoint_c"), bool(flag("sensor_fault")))
        if self._samples.offer(s):
            self.counters["dropped"] += 1

    async def _process(self, s: Sample) -> None:
        self.counters["samples"] += 1
        if s.online:
            self._history.append((s.wall, s.cabinet, s.evap, s.compressor))
            while self._history and self._history[0][0] < s.wall - self.history_s:
                self._history.popleft()
        effects = self._evaluate(s)
        minute = int(s.wall // 60)
        flush = self._minute if self._minute is not None and self._minute.minute != minute else None
        if self._minute is None or flush is not None:
            self._minute = _Minute(minute)
        if s.online:
            for name, value in (("cabinet_temp_c", s.cabinet), ("evaporator_temp_c", s.evap),
                                ("compressor_duty", None if s.compressor is None else float(s.compressor))):
                self._minute.add(name, value)
        await self._store(s, effects, flush)
        if s.online:
            await self._sync_setpoint(s)

    def _evaluate(self, s: Sample) -> list[Any]:
        """Run the pure rules on one sample; returns alarm and lockout effects."""
        effects: list[Any] = []
        sensor_rule = self._rules[2]
        st, eff = sensor_rule.evaluate(self._states[sensor_rule.key], (s.cabinet, s.sensor_fault), s.mono)
        self._states[sensor_rule.key] = st
        effects += eff
        trusted = s.cabinet if s.cabinet is not None and not st.active else None
        for rule in self._rules[:2]:
            self._states[rule.key], eff = rule.evaluate(self._states[rule.key], trusted, s.mono)
            effects += eff
        if trusted is not None:
            self.max_cabinet_c = trusted if self.max_cabinet_c is None else max(self.max_cabinet_c, trusted)
        self.safety, eff2 = fs.observe(self.safety, trusted, s.mono, self.limits)
        effects += eff2
        self._track_defrost(s)
        return effects

    def _track_defrost(self, s: Sample) -> None:
        if s.defrost is None or s.defrost == self.defrost["active"]:
            return
        self.defrost["active"] = s.defrost
        if s.defrost:
            self._defrost_started = s.wall
            self.defrost["count"] += 1
            self.defrost["last_started"] = s.wall
        elif self._defrost_started is not None:
            self.defrost["last_duration_s"] = round(s.wall - self._defrost_started, 1)

    # ---- ledger ------------------------------------------------------------------------------

    async def _store(self, s: Sample, effects: list[Any], flush: _Minute | None) -> None:
        if flush is not None:
            await self._check_restocks(s.mono)
        persist = self._excursion_doc()
        if not effects and flush is None and persist == self._persisted:
            return
        async with self.db.tx() as tx:
            await apply_alarm_effects(tx, [e for e in effects if isinstance(e, Raise | Clear)])
            for e in effects:
                if isinstance(e, fs.Lock):
                    await self._record_lock(tx, e)
            if flush is not None:
                await self._write_minute(tx, flush)
            if persist != self._persisted:
                await cold_chain.save_state(tx, _META_KEY, persist)
        self._persisted = persist

    def _excursion_doc(self) -> dict[str, Any]:
        """The excursion clock as wall times, so it survives a restart (rounded: written on change only)."""
        mono, wall = self.clock.monotonic(), self.clock.wall()

        def to_wall(m: float | None) -> float | None:
            return None if m is None else round(wall - (mono - m))

        return {"above_since": to_wall(self.safety.above_since), "grace_until": to_wall(self.safety.grace_until)}

    async def _record_lock(self, tx: Tx, lock: fs.Lock) -> None:
        await cold_chain.record_food_safety_lockout(tx, lock.reason, lock.data)
        msg = (f"perishable goods locked: cabinet above {self.limits.limit_c:g} °C for "
               f"{lock.data['above_s'] / 60:.0f} min (peak {lock.data['peak_c']})")
        await repo.raise_alarm(tx, LOCKOUT_ALARM, "food_safety_lockout", msg, severity="critical", data=lock.data)
        await tx.event("food_safety_lockout", lock.data, severity="critical")
        self.counters["lockouts"] += 1
        log.warning("food_safety_lockout", fridge=self.name, **lock.data)

    async def _write_minute(self, tx: Tx, m: _Minute) -> None:
        summary = m.summary()
        if not summary:
            return
        minute_iso = iso(m.minute * 60)
        for point, agg in summary.items():
            await cold_chain.write_minute(tx, minute_iso, f"{self.name}.{point}", agg["avg"], agg["min"], agg["max"])
        await tx.outbox("telemetry", {"minute": minute_iso, "device": self.name, "points": summary,
                                      "setpoint_c": self.setpoint, "defrost_active": self.defrost["active"],
                                      "food_safety_locked": self.safety.locked},
                        record_id=f"telemetry-{self.name}-{minute_iso}")
        self.counters["minutes"] += 1

    async def _check_restocks(self, mono: float) -> None:
        """A restock (any path: page, CLI, cloud) starts the food-safety grace period."""
        newer = await cold_chain.restock_events_after(self.db, self._last_restock_event)
        if newer:
            self._last_restock_event = newer[-1]
            self.note_restock(mono)

    def note_restock(self, mono: float | None = None) -> None:
        """Start the restock grace period now (also picked up from `restock` events every minute)."""
        self.safety = fs.restocked(self.safety, self.clock.monotonic() if mono is None else mono, self.limits)
        log.info("food_safety_grace_started", fridge=self.name, grace_s=self.limits.restock_grace_s)

    # ---- commands ----------------------------------------------------------------------------

    async def set_setpoint(self, c: float, *, actor: str = "") -> None:
        """Write a new setpoint (verified by the driver's read-back) and journal it.

        Raises ValueError when outside the controller's range, DeviceError when the write fails.
        """
        point = self.device.regmap.point("setpoint_c")
        if not point.in_range(c) or math.isnan(c):
            raise ValueError(f"setpoint {c} °C outside {point.range}")
        before = self.setpoint
        async with asyncio.timeout(5.0):
            await self.device.write("setpoint_c", c)
        self.setpoint = c
        self.counters["setpoint_writes"] += 1
        async with self.db.tx() as tx:
            await tx.event("setpoint_changed", {"device": self.name, "from_c": before, "to_c": c, "actor": actor})
        log.info("setpoint_changed", fridge=self.name, from_c=before, to_c=c, actor=actor)

    async def _sync_setpoint(self, s: Sample) -> None:
        """Keep the controller on our setpoint (a replaced or reset controller boots with its own)."""
        if s.setpoint is None or abs(s.setpoint - self.setpoint) < 0.05:
            return
        if self._last_setpoint_try is not None and s.mono - self._last_setpoint_try < SETPOINT_RETRY_S:
            return
        self._last_setpoint_try = s.mono
        try:
            await self.set_setpoint(self.setpoint, actor="config")
        except (DeviceError, TimeoutError) as exc:
            log.warning("setpoint_write_failed", fridge=self.name, error=str(exc))

    async def food_safety_guard(self, slot_id: str, sku_id: str) -> None:
        """Sale guard: refuse perishable SKUs while the food-safety lockout holds. Never writes."""
        if not self.safety.locked:
            return
        planogram = await repo.current_planogram(self.db)
        sku = planogram.skus.get(sku_id) if planogram else None
        perishable = True if sku is None else sku.perishable  # unknown goods: assume the worst
        if fs.sellable(self.safety, perishable):
            return
        self.counters["sales_refused_food_safety"] += 1
        log.info("sale_refused_food_safety", slot=slot_id, sku=sku_id)
        raise SaleRefused("food_safety_lockout",
                          f"{sku_id} is perishable and the cabinet was above {self.limits.limit_c:g} °C "
                          f"too long; a technician must check and clear the machine")

    async def clear_lockout(self, actor: str) -> bool:
        """A technician clears the lockout (returns False when none was active)."""
        self.safety, effects = fs.clear(self.safety, actor, self.clock.monotonic())
        if not effects:
            return False
        async with self.db.tx() as tx:
            await cold_chain.clear_food_safety_lockout(tx, actor)
            await repo.clear_alarm(tx, LOCKOUT_ALARM, f"cleared by {actor}")
            await tx.event("food_safety_cleared", {"actor": actor, "device": self.name})
        log.warning("food_safety_cleared", fridge=self.name, actor=actor)
        return True

    # ---- reads for the page ------------------------------------------------------------------

    def series(self, since: float = 0.0) -> list[tuple[float, float | None, float | None, bool | None]]:
        """Full-rate history (wall ts, cabinet °C, evaporator °C, compressor on) from `since` (wall)."""
        return [row for row in self._history if row[0] >= since]

    def duty_cycle(self, window_s: float = 3600.0) -> float | None:
        """Fraction of the last `window_s` with the compressor running (None without data)."""
        if not self._history:
            return None
        start = self._history[-1][0] - window_s
        on = total = 0.0
        prev: tuple[float, Any, Any, bool | None] | None = None
        for row in self._history:
            if row[0] < start:
                prev = row
                continue
            if prev is not None:
                dt = row[0] - max(prev[0], start)
                total += dt
                on += dt if prev[3] else 0.0
            prev = row
        return round(on / total, 3) if total > 0 else None

    def status(self) -> dict[str, Any]:
        last = self._history[-1] if self._history else None
        return {"online": self.device.online, "cabinet_c": last[1] if last else None,
                "evaporator_c": last[2] if last else None, "compressor_on": last[3] if last else None,
                "setpoint_c": self.setpoint, "duty_cycle_1h": self.duty_cycle(), "defrost": dict(self.defrost),
                "food_safety": {"locked": self.safety.locked, "limit_c": self.limits.limit_c,
                                "max_s": self.limits.max_s, "excursion": self.safety.above_since is not None},
                "max_cabinet_c": self.max_cabinet_c, "counters": dict(self.counters)}

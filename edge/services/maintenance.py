"""Predictive maintenance on the live machine: the compressor's run-length trend from the fridge
controller's polls (`edge.core.maintenance.CoolingWatch`) raises a "service soon" alarm before a
refrigerant leak or a dirty condenser lets the cabinet warm; `SlotTrends` does the same for each
spiral from the board's motor run time and mean motor current per vend (the current when the board
reports it: VEND_DONE's long form; a board that does not leaves the run-time trend alone). Runs
touched by a defrost or an open door are not judged. The watchers' learnt state is kept in the
ledger (edge/ledger/maintenance.py, `meta`) and taken back before the first new sample after a
restart, so baselines are not relearnt; a half-learnt cooling baseline is (its samples are
monotonic times of the dead process) — no alarm can come from a half-learnt baseline.
"""

from __future__ import annotations

from typing import Any

import structlog

from drivers.modbus import ModbusDevice
from drivers.vend_board import VendOutcome, VendResult
from edge.clock import SystemClock
from edge.core.maintenance import CoolingConfig, CoolingWatch, SlotConfig, SlotWatch
from edge.ledger import maintenance as rows
from edge.ledger.db import LedgerDB
from edge.services.sample_queue import SampleQueue
from edge.services.temperature import apply_alarm_effects

log = structlog.get_logger(__name__)


class MaintenanceService:
    """Feeds one fridge controller's compressor state to a CoolingWatch. Run `run()` supervised."""

    def __init__(
        self,
        db: LedgerDB,
        device: ModbusDevice,
        *,
        door: Any = None,
        clock: SystemClock | None = None,
        config: CoolingConfig | None = None,
        name: str = "fridge",
    ) -> None:
        self.db, self.device, self.door = db, device, door
        self.clock = clock or SystemClock()
        self.watch = CoolingWatch(name, config or CoolingConfig())
        self._saved: dict[str, Any] | None = None  # the state last written to the ledger
        self._samples: SampleQueue[tuple[float, bool, bool, bool]] = SampleQueue(lambda s: self._process(*s), 10_000)
        device.subscribe(self._on_poll)

    def _on_poll(self, dev: ModbusDevice) -> None:
        v = dev.values
        if not dev.online or "compressor_on" not in v:
            return
        door_open = self.door is not None and self.door.closed is False
        self._samples.offer((self.clock.monotonic(), bool(v["compressor_on"]), bool(v.get("defrost_active")), door_open))

    async def run(self) -> None:
        await self._samples.run()

    async def drain(self) -> None:
        await self._samples.drain()

    async def _restore(self) -> None:
        if self._saved is None:
            state = (await rows.load_trend_states(self.db, "cooling")).get(self.watch.name)
            if state is not None:
                self.watch.restore(state)
            self._saved = self.watch.state()

    async def _process(self, t: float, on: bool, defrost: bool, door_open: bool) -> None:
        await self._restore()
        effects = self.watch.observe(t, on, defrost=defrost, door_open=door_open)
        state = self.watch.state()  # changes when a baseline is learnt or the alarm rises: rarely
        if effects or state != self._saved:
            async with self.db.tx() as tx:
                await apply_alarm_effects(tx, effects)
                await rows.save_trend_state(tx, "cooling", self.watch.name, state)
            self._saved = state

    async def serviced(self, actor: str) -> None:
        """A technician repaired the cooling: clear the alarm, learn the baseline again."""
        await self._restore()
        effects = self.watch.serviced()
        state = self.watch.state()
        async with self.db.tx() as tx:
            await apply_alarm_effects(tx, effects)
            await rows.save_trend_state(tx, "cooling", self.watch.name, state)
            await tx.event("cooling_serviced", {"actor": actor, "device": self.watch.name})
        self._saved = state

    def status(self) -> dict[str, Any]:
        return {
            "service_soon": self.watch.active,
            "ratio": self.watch.ratio("normal"),
            "duty": None if self.watch.duty is None else round(self.watch.duty, 3),
        }


class SlotTrends:
    """Per-slot motor run-time and current trends from every vend (`VendService.result_listeners`): a
    spiral that starts to bind raises "service soon" before it jams. Each slot's state is written to the
    ledger after every vend it judges and read back before the first vend after a restart.
    Run `run()` supervised."""

    def __init__(self, db: LedgerDB, config: SlotConfig | None = None) -> None:
        self.db = db
        self.config = config or SlotConfig()
        self.watches: dict[str, SlotWatch] = {}
        self._restored = False
        self._samples: SampleQueue[tuple[str, int, int | None]] = SampleQueue(lambda s: self._process(*s), 10_000)

    def on_vend(self, slot_id: str, result: VendResult) -> None:
        """Listener: only successful vends say how freely the spiral turns (a jam stops it half-way)."""
        if result.outcome is VendOutcome.OK and result.motor_ms > 0 and not self._samples.full():
            mean_ma = None if result.current is None else result.current.mean_ma
            self._samples.offer((slot_id, result.motor_ms, mean_ma))

    async def run(self) -> None:
        await self._samples.run()

    async def drain(self) -> None:
        await self._samples.drain()

    async def _restore(self) -> None:
        if self._restored:
            return
        for slot_id, state in (await rows.load_trend_states(self.db, "slot")).items():
            self._watch(slot_id).restore(state)
        self._restored = True

    def _watch(self, slot_id: str) -> SlotWatch:
        return self.watches.setdefault(slot_id, SlotWatch(slot_id, self.config))

    async def _process(self, slot_id: str, motor_ms: int, mean_ma: int | None) -> None:
        await self._restore()
        watch = self._watch(slot_id)
        effects = watch.observe(motor_ms, mean_ma)
        async with self.db.tx() as tx:
            await apply_alarm_effects(tx, effects)
            await rows.save_trend_state(tx, "slot", slot_id, watch.state())

    async def serviced(self, slot_id: str, actor: str) -> None:
        """A technician serviced the spiral: clear its alarm, learn its baselines again."""
        await self._restore()
        watch = self._watch(slot_id)
        effects = watch.serviced()
        async with self.db.tx() as tx:
            await apply_alarm_effects(tx, effects)
            await rows.save_trend_state(tx, "slot", slot_id, watch.state())
            await tx.event("spiral_serviced", {"slot_id": slot_id, "actor": actor})

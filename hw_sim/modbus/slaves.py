"""The three simulated slaves: what each one shows in its registers and what a write does.

Each slave keeps a register image (table -> address -> raw value) encoded with the driver's own
register-map codec, refreshed from physics by the plant's tick task; writes arrive as decoded
point values and change the physics (setpoint, defrost, tare, calibration, lock, light).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from drivers.modbus.regmap import Point, RegisterMap, Value, decode_point, encode_point

from ..physics import ALARM_SENSOR, FridgePhysics, LoadCell


class RegisterImage:
    """Raw register/bit values of one slave, addressed like the wire (table, address)."""

    def __init__(self, regmap: RegisterMap) -> None:
        self.regmap = regmap
        self.raw: dict[str, dict[int, int]] = {t: {} for t in ("holding", "input", "coil", "discrete")}
        for p in regmap.points.values():
            self.set(p.name, False if p.is_bit else 0)

    def set(self, name: str, value: Value) -> None:
        """Store an engineering value (clamped to what the type can hold, like firmware does)."""
        p = self.regmap.points[name]
        try:
            raw = encode_point(p, value)
        except ValueError:
            raw = encode_point(p, _clamp_to_type(p, float(value)))
        if isinstance(raw, bool):
            self.raw[p.table][p.address] = int(raw)
        else:
            for i, r in enumerate(raw):
                self.raw[p.table][p.address + i] = r

    def get(self, name: str) -> Value:
        p = self.regmap.points[name]
        if p.is_bit:
            return decode_point(p, bool(self.raw[p.table][p.address]))
        return decode_point(p, [self.raw[p.table][p.address + i] for i in range(p.width)])

    def write(self, table: str, address: int, values: Sequence[int] | Sequence[bool]) -> list[tuple[str, Value]]:
        """Apply a wire write; returns the (point, value) pairs it touched."""
        for i, v in enumerate(values):
            self.raw[table][address + i] = int(v)
        end = address + len(values)
        return [(p.name, self.get(p.name)) for p in self.regmap.points.values()
                if p.table == table and p.address < end and p.address + p.width > address]


def _clamp_to_type(p: Point, value: float) -> float:
    lo, hi = {"u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFFFFFF),
              "i32": (-0x80000000, 0x7FFFFFFF)}.get(p.type, (-1e38, 1e38))
    return max(lo * p.scale, min(hi * p.scale, value)) if p.scale > 0 else value


class SimSlave:
    """Base for a simulated slave: a register image plus behaviour on tick and write."""

    kind = "slave"
    # How old (simulated seconds) the image may be when a master reads it. None: as of the plant's last
    # tick (TICK_S real seconds, i.e. minutes of simulated time at high speed; an amplifier's sample
    # stream keeps that rate). A controller whose registers follow its state continuously sets a bound,
    # so an edge such as the compressor starting is seen when it happens, not up to one tick later.
    fresh_s: float | None = None

    def __init__(self, unit: int, regmap: RegisterMap) -> None:
        self.unit = unit
        self.image = RegisterImage(regmap)
        self.stuck: dict[str, Value] = {}

    def show(self, name: str, value: Value) -> None:
        self.image.set(name, self.stuck.get(name, value))

    def tick(self, dt_s: float) -> None:
        """Advance own physics (if any) by dt_s simulated seconds and refresh the image."""

    def on_write(self, name: str, value: Value) -> None:
        """React to a master writing a point."""


class FridgeControllerSlave(SimSlave):
    kind = "fridge_controller"
    fresh_s = FridgePhysics.SUBSTEP_S

    def __init__(self, unit: int, physics: FridgePhysics) -> None:
        super().__init__(unit, RegisterMap.builtin("fridge_controller"))
        self.physics = physics
        self.tick(0.0)

    def tick(self, dt_s: float) -> None:
        f = self.physics
        if dt_s > 0:
            f.step(dt_s)
        self.show("cabinet_temp_c", f.cabinet_probe_c())
        self.show("evaporator_temp_c", f.evaporator_probe_c())
        self.show("setpoint_c", f.setpoint_c)
        self.show("compressor_on", f.compressor_on)
        self.show("defrost_active", f.defrost_active)
        self.show("defrost_request", f.defrost_active)
        self.show("fan_eco", f.fan_eco)
        pts = self.image.regmap.points
        fault = any(not pts[n].in_range(self.image.get(n)) for n in ("cabinet_temp_c", "evaporator_temp_c"))
        self.show("sensor_fault", fault)
        self.show("alarm_bits", f.alarm_bits() | (ALARM_SENSOR if fault else 0))

    def on_write(self, name: str, value: Value) -> None:
        if name == "setpoint_c":
            self.physics.setpoint_c = float(value)
        elif name == "defrost_request" and value:
            self.physics.request_defrost()
        elif name == "fan_eco":
            self.physics.fan_eco = bool(value)
        self.tick(0.0)


class WeightShelfSlave(SimSlave):
    kind = "weight_shelf"

    def __init__(self, unit: int, shelf_grams: Callable[[int], float], shelves: int = 4, seed: int = 0) -> None:
        super().__init__(unit, RegisterMap.builtin("weight_shelf"))
        self.cells = [LoadCell(functools.partial(shelf_grams, k), seed=seed * 100 + k) for k in range(shelves)]
        for k, cell in enumerate(self.cells):
            self.show(f"calibration_factor{k}", cell.calibration_factor)
        self.tick(0.0)

    def tick(self, dt_s: float) -> None:
        for k, cell in enumerate(self.cells):
            cell.step(dt_s)
            self.show(f"shelf{k}_grams", cell.grams)
            self.show(f"shelf{k}_stable", cell.stable)

    def on_write(self, name: str, value: Value) -> None:
        if name.startswith("tare_shelf") and value:
            self.cells[int(name.removeprefix("tare_shelf"))].tare()
        elif name.startswith("calibration_factor"):
            self.cells[int(name.removeprefix("calibration_factor"))].calibration_factor = float(value)
        self.tick(0.0)


class IoModuleSlave(SimSlave):
    kind = "io_module"

    def __init__(self, unit: int, door_open: Callable[[], bool],
                 on_light: Callable[[bool], None] | None = None) -> None:
        super().__init__(unit, RegisterMap.builtin("io_module"))
        self._door_open = door_open
        self._on_light = on_light  # the cabinet lights are inside the fridge: their heat is physics
        self.locked = True  # fail safe: a powered-up lock module holds the door
        self.light = False
        self.mains_ok = True  # `cut_mains`/`restore_mains` on the plant: the module runs on its backup
        self.supply_v = 230.0
        self.humidity_pct = 55.0
        self.tick(0.0)

    def tick(self, dt_s: float) -> None:
        self.show("lock_coil", self.locked)
        self.show("light", self.light)
        self.show("door_closed", not self._door_open())
        self.show("mains_ok", self.mains_ok)
        self.show("supply_v", self.supply_v if self.mains_ok else 0.0)
        self.show("humidity_pct", self.humidity_pct)

    def on_write(self, name: str, value: Value) -> None:
        if name == "lock_coil":
            self.locked = bool(value)
        elif name == "light":
            self.light = bool(value)
            if self._on_light is not None:
                self._on_light(self.light)
        self.tick(0.0)

"""Deterministic physics for the simulated fridge: cabinet thermals and load cells.

Pure: no clock reads, no I/O. Time advances only through `step(dt_s)`; randomness comes from a
seeded `random.Random`, so a seed reproduces a run exactly.

Thermal model (lumped, explicit Euler in <= 1 s substeps):
  cabinet air+walls  C_cab  dT/dt = UA_leak(T_amb-T) + door*UA_door(T_amb-T) - UA_evap(T-T_evap)
                                    - UA_prod(T-T_prod)
  product            C_prod dT/dt = UA_prod(T_cab-T_prod)
  evaporator         C_evap dT/dt = UA_evap(T_cab-T_evap) - cooling + defrost heater
The controller is a thermostat on the cabinet probe (setpoint +- hysteresis/2) with timed
defrost cycles; `compressor_failed` makes the compressor run without cooling.

Energy: an electricity meter integrates compressor on-time x rated power, the cabinet lights and
the evaporator fan (both also heat the cabinet). The fan runs all the time unless `fan_eco` makes
it run with the compressor only. `refrigerant_charge` (1.0 = full) scales the cooling capacity,
so a slow leak is `charge` falling over days. Defaults keep lights and fan at 0 W (as before).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

ALARM_HIGH_TEMP = 1 << 0
ALARM_COMPRESSOR = 1 << 1
ALARM_SENSOR = 1 << 2


@dataclass
class FridgeParams:
    """Physical constants of a ~400 l glass-door merchandiser (SI units, degC)."""

    ambient_c: float = 22.0
    c_cab_j_k: float = 20_000.0
    ua_leak_w_k: float = 2.5
    ua_door_w_k: float = 40.0
    ua_evap_w_k: float = 40.0
    c_evap_j_k: float = 3_000.0
    ua_prod_w_k: float = 15.0
    cooling_w: float = 300.0
    min_evap_c: float = -35.0  # cooling capacity falls to zero here
    hysteresis_c: float = 2.0
    defrost_interval_s: float = 6 * 3600.0
    defrost_max_s: float = 20 * 60.0
    defrost_end_evap_c: float = 8.0
    defrost_heater_w: float = 300.0
    high_temp_margin_c: float = 4.0
    sensor_noise_c: float = 0.05
    compressor_rated_w: float = 180.0  # electrical input while running (cooling_w / COP ~1.7)
    lighting_w: float = 0.0  # LED strips inside the cabinet: electricity that ends up as heat inside
    fan_w: float = 0.0  # evaporator fan, likewise


MERCHANDISER = FridgeParams(lighting_w=25.0, fan_w=10.0)
"""A glass-door merchandiser with its lights and fan modelled (energy benchmarks)."""


class FridgePhysics:
    """Cabinet, product and evaporator temperatures under a thermostat with defrost cycles."""

    SUBSTEP_S = 1.0

    def __init__(self, params: FridgeParams | None = None, *, setpoint_c: float = 4.0,
                 start_c: float | None = None, product_heat_capacity_j_k: float = 40_000.0,
                 seed: int = 0) -> None:
        self.p = params or FridgeParams()
        self.setpoint_c = setpoint_c
        t0 = self.p.ambient_c if start_c is None else start_c
        self.cabinet_c = self.product_c = t0
        self.evaporator_c = t0 - (2.0 if start_c is not None else 0.0)
        self.product_heat_capacity_j_k = product_heat_capacity_j_k
        self.door_open = False
        self.compressor_on = False
        self.compressor_failed = False
        self.defrost_active = False
        self.lights_on = True
        self.fan_eco = False
        self.refrigerant_charge = 1.0
        self.powered = True  # mains: without it nothing runs (compressor, fan, lights, heater)
        self.compressor_on_s = 0.0
        self.energy_j = 0.0
        self.time_s = 0.0
        self._since_defrost_s = 0.0
        self._defrost_elapsed_s = 0.0
        self._not_cooling_s = 0.0  # compressor running but evaporator not colder than cabinet
        self._rng = random.Random(seed)

    def request_defrost(self) -> None:
        """Start a defrost now (as a technician or the daemon can ask the controller to)."""
        if not self.defrost_active:
            self.defrost_active, self._defrost_elapsed_s = True, 0.0

    def step(self, dt_s: float) -> None:
        """Advance the model by dt_s seconds of simulated time."""
        if dt_s < 0:
            raise ValueError("time only runs forward")
        n = max(1, math.ceil(dt_s / self.SUBSTEP_S))
        h = dt_s / n
        for _ in range(n):
            self._control(h)
            self._integrate(h)
            self.time_s += h

    def _control(self, h: float) -> None:
        p = self.p
        self._since_defrost_s += h
        if self.defrost_active:
            self._defrost_elapsed_s += h
            if self.evaporator_c >= p.defrost_end_evap_c or self._defrost_elapsed_s >= p.defrost_max_s:
                self.defrost_active, self._since_defrost_s = False, 0.0
        elif self._since_defrost_s >= p.defrost_interval_s:
            self.request_defrost()
        if self.defrost_active or not self.powered:
            self.compressor_on = False
        elif self.cabinet_c > self.setpoint_c + p.hysteresis_c / 2:
            self.compressor_on = True
        elif self.cabinet_c < self.setpoint_c - p.hysteresis_c / 2:
            self.compressor_on = False
        cooling_badly = self.compressor_on and self.evaporator_c > self.cabinet_c - 3.0
        self._not_cooling_s = self._not_cooling_s + h if cooling_badly else 0.0

    def _integrate(self, h: float) -> None:
        p = self.p
        t_cab, t_ev, t_pr = self.cabinet_c, self.evaporator_c, self.product_c
        q_evap = p.ua_evap_w_k * (t_cab - t_ev)
        q_prod = p.ua_prod_w_k * (t_cab - t_pr)
        q_in = (p.ua_leak_w_k + (p.ua_door_w_k if self.door_open else 0.0)) * (p.ambient_c - t_cab)
        cooling = 0.0
        if self.compressor_on and not self.compressor_failed:
            cooling = p.cooling_w * self.refrigerant_charge * min(1.5, max(0.0, (t_ev - p.min_evap_c) / 30.0))
        heater = p.defrost_heater_w if self.defrost_active and self.powered else 0.0
        inside = (p.lighting_w if self.lights_on else 0.0) + (p.fan_w if self.fan_running else 0.0)
        inside = inside if self.powered else 0.0
        electric = inside + heater + (p.compressor_rated_w if self.compressor_on else 0.0)
        self.energy_j += h * electric
        self.compressor_on_s += h if self.compressor_on else 0.0
        self.cabinet_c = t_cab + h * (q_in + inside - q_evap - q_prod) / p.c_cab_j_k
        self.evaporator_c = t_ev + h * (q_evap - cooling + heater) / p.c_evap_j_k
        c_prod = max(self.product_heat_capacity_j_k, 1_000.0)
        self.product_c = t_pr + h * q_prod / c_prod

    @property
    def fan_running(self) -> bool:
        """The evaporator fan: always on, or (eco) only while the compressor runs."""
        return not self.fan_eco or self.compressor_on

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / 3.6e6

    def cabinet_probe_c(self) -> float:
        """What the cabinet probe reads (true temperature plus a little noise)."""
        return self.cabinet_c + self._rng.gauss(0.0, self.p.sensor_noise_c)

    def evaporator_probe_c(self) -> float:
        return self.evaporator_c + self._rng.gauss(0.0, self.p.sensor_noise_c)

    def alarm_bits(self) -> int:
        """The controller's own alarms (high temperature, compressor runs without cooling)."""
        bits = 0
        if self.cabinet_c > self.setpoint_c + self.p.high_temp_margin_c:
            bits |= ALARM_HIGH_TEMP
        if self._not_cooling_s >= 15 * 60:
            bits |= ALARM_COMPRESSOR
        return bits


class LoadCell:
    """A shelf load cell: true grams (from a callable) + dead load, settling, noise, drift,
    tare and calibration factor, and a stability flag from the spread of recent samples."""

    def __init__(self, true_grams: Callable[[], float], *, seed: int = 0, dead_load_g: float = 1500.0,
                 noise_g: float = 0.3, drift_g_per_sqrt_h: float = 0.5, settle_s: float = 0.15,
                 window: int = 5, stable_band_g: float = 2.0, gain_error: float = 0.0) -> None:
        self._true = true_grams
        self._rng = random.Random(seed)
        self.dead_load_g = dead_load_g
        self.noise_g = noise_g
        self.drift_g_per_sqrt_h = drift_g_per_sqrt_h
        self.settle_s = settle_s
        self.stable_band_g = stable_band_g
        self.gain = 1.0 + gain_error  # the sensor's real sensitivity; calibration corrects it
        self.calibration_factor = 1.0
        self.drift_g = 0.0
        self._mech_g = self._load()  # settled mechanical load seen by the cell
        self._samples: deque[float] = deque(maxlen=window)
        self._tare_raw = 0.0
        self._samples.append(self._raw())
        self._tare_raw = self.gain * dead_load_g  # factory zero: the empty tray reads 0 g

    def _load(self) -> float:
        return self.dead_load_g + float(self._true())

    def _raw(self) -> float:
        return self.gain * (self._mech_g + self.drift_g) + self._rng.gauss(0.0, self.noise_g)

    def step(self, dt_s: float) -> None:
        """Advance dt_s seconds and take one sample."""
        if dt_s > 0:
            self._mech_g += (self._load() - self._mech_g) * (1.0 - math.exp(-dt_s / self.settle_s))
            self.drift_g += self._rng.gauss(0.0, self.drift_g_per_sqrt_h * math.sqrt(dt_s / 3600.0))
        self._samples.append(self._raw())

    def tare(self) -> None:
        """Zero the reading at the current load (mean of the recent samples)."""
        self._tare_raw = sum(self._samples) / len(self._samples)

    @property
    def grams(self) -> float:
        """Net grams as the amplifier reports them: (last raw - tare) * calibration factor."""
        return (self._samples[-1] - self._tare_raw) * self.calibration_factor

    @property
    def stable(self) -> bool:
        """True when the recent window of samples spreads less than the stable band."""
        full = len(self._samples) == self._samples.maxlen
        return full and (max(self._samples) - min(self._samples)) * self.calibration_factor < self.stable_band_g

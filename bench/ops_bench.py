"""Operations bench: eco vs normal energy on the same simulated week, and predictive maintenance.

`python bench/run.py ops --days 7` prints
  energy_saving_ratio      1 - kWh(eco) / kWh(normal), same seed: same doors, same ambient
  food_safety_exceedances  in both of those weeks: food-safety lockouts (cabinet above the limit
                           longer than allowed, the rule the daemon enforces) plus hours in which
                           the product core went above the limit
  maintenance_lead_time_h  the shortest warning among the degradation runs: first failure (a jam,
                           or the food-safety lockout of a leaking fridge) minus the "service soon"
  false_alarms_per_week    "service soon" alarms on healthy equipment (healthy weeks with a hot
                           day, plus the healthy slots of the degradation weeks) per machine-week
  and per spiral trend (the slot alarm is raised by whichever trips first; each is also timed alone):
  current_lead_time_h / run_time_lead_time_h        the shortest warning of that trend alone
  current_false_alarms_per_week / run_time_false_alarms_per_week   its trips on healthy spirals

Everything runs on the simulator's physics (`hw_sim.physics`, `hw_sim.wear`) with the daemon's
pure rules (`edge.core.eco`, `edge.core.food_safety`, `edge.core.maintenance`) in 10 s steps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

from edge.core import eco
from edge.core import food_safety as fs
from edge.core.alarms import Raise
from edge.core.maintenance import CoolingWatch, SlotWatch
from hw_sim.physics import MERCHANDISER, FridgePhysics
from hw_sim.wear import DAY, RefrigerantLeak, Spiral

STEP_S = 10.0
SLOTS = [f"{r}{c}" for r in "AB" for c in range(1, 6)]
NORMAL_SETPOINT_C = 3.0


@dataclass
class Week:
    """What one simulated run measured."""

    kwh: float = 0.0
    compressor_h: float = 0.0
    lockouts: list[float] = field(default_factory=list)
    product_hours_above: int = 0
    max_cabinet_c: float = -math.inf
    alarms: dict[str, float] = field(default_factory=dict)  # alarm key -> first raised (sim s)
    jams: dict[str, float] = field(default_factory=dict)  # slot -> first jam (sim s)
    trips: dict[str, float] = field(default_factory=dict)  # "current:A2" / "run_time:A2" -> first trip (sim s)
    vends: int = 0


def _ambient(rng: random.Random, days: int, hot_day: int | None) -> list[float]:
    """Per-day mean ambient (°C): a little weather, and optionally one heat-wave day (+5 °C)."""
    return [22.0 + rng.uniform(-1.5, 1.5) + (5.0 if d == hot_day else 0.0) for d in range(days + 1)]


def _door_schedule(rng: random.Random, days: int) -> list[tuple[float, float]]:
    """(open at, seconds open): ~6 openings an hour from 07 to 22 h, rare at night."""
    out, t = [], 0.0
    while t < days * DAY:
        hour = (t / 3600.0) % 24
        rate = 6.0 if 7 <= hour < 22 else 0.2
        t += rng.expovariate(rate / 3600.0)
        out.append((t, rng.uniform(5.0, 20.0)))
    return out


def _vend_schedule(rng: random.Random, days: int) -> list[tuple[float, str]]:
    """(time, slot): ~8 vends a day per slot, by day."""
    out = []
    for d in range(days):
        for slot in SLOTS:
            for _ in range(rng.randint(5, 11)):
                out.append((d * DAY + rng.uniform(7, 22) * 3600.0, slot))
    return sorted(out)


def simulate(
    days: int,
    seed: int,
    *,
    eco_on: bool,
    leak: RefrigerantLeak | None = None,
    worn: dict[str, tuple[float, float]] | None = None,
    hot_day: int | None = None,
    setpoint_c: float = NORMAL_SETPOINT_C,
) -> Week:
    """One machine for `days`: fridge (+ eco when on), 10 spirals; `worn` slot -> (start s, friction/day)."""
    rng = random.Random(seed)
    ambient = _ambient(rng, days, hot_day)
    doors = _door_schedule(rng, days)
    vends = _vend_schedule(rng, days)
    f = FridgePhysics(replace(MERCHANDISER), setpoint_c=setpoint_c, start_c=setpoint_c, seed=seed)
    cfg = eco.EcoConfig(normal_setpoint_c=setpoint_c, hysteresis_c=f.p.hysteresis_c)
    spirals = {
        s: Spiral(
            s,
            seed=seed,
            wear_start_s=(worn or {}).get(s, (None, 0.0))[0],
            friction_per_day=(worn or {}).get(s, (None, 0.0))[1],
        )
        for s in SLOTS
    }
    slot_watch = {s: SlotWatch(s) for s in SLOTS}
    cooling, safety, limits = CoolingWatch(), fs.State(), fs.Limits()
    week = Week()
    di = vi = 0
    door_until, last_door, mode, hour_max = -1.0, None, None, -math.inf
    t = 0.0
    while t < days * DAY:
        hour = (t / 3600.0) % 24
        day = int(t // DAY)
        f.p.ambient_c = ambient[day] + 2.0 * math.sin(2 * math.pi * (hour - 9) / 24)  # our own copy
        while di < len(doors) and doors[di][0] <= t:
            door_until = max(door_until, doors[di][0] + doors[di][1])
            di += 1
        f.door_open = t < door_until
        if f.door_open:
            last_door = t
        if leak is not None:
            f.refrigerant_charge = leak.charge(t)
        if eco_on and (mode is None or t % 60 == 0):
            since = None if last_door is None else t - last_door
            mode = eco.decide(cfg, hour, since, f.cabinet_c)
            f.setpoint_c, f.lights_on, f.fan_eco = mode.setpoint_c, mode.lights_on, mode.fan_eco
        f.step(STEP_S)
        t += STEP_S
        regime = "eco" if mode is not None and mode.eco else "normal"
        _note(
            week,
            cooling.observe(
                t, f.compressor_on, regime=regime, defrost=f.defrost_active, door_open=f.door_open
            ),
            t,
        )
        safety, locks = fs.observe(safety, f.cabinet_probe_c(), t, limits)
        week.lockouts += [t for _ in locks]
        week.max_cabinet_c = max(week.max_cabinet_c, f.cabinet_c)
        hour_max = max(hour_max, f.product_c)
        if t % 3600 == 0:
            week.product_hours_above += hour_max > limits.limit_c
            hour_max = -math.inf
        while vi < len(vends) and vends[vi][0] <= t:
            _vend(week, spirals[vends[vi][1]], slot_watch[vends[vi][1]], t)
            vi += 1
    week.kwh, week.compressor_h = f.energy_kwh, f.compressor_on_s / 3600.0
    return week


def _vend(week: Week, spiral: Spiral, watch: SlotWatch, t: float) -> None:
    run = spiral.run(t)
    week.vends += 1
    if run.jammed:
        week.jams.setdefault(spiral.slot, t)
        return
    _note(week, watch.observe(run.motor_ms, run.mean_ma), t)
    for name, trend in (("current", watch.current), ("run_time", watch.run_time)):
        if trend.tripped:
            week.trips.setdefault(f"{name}:{spiral.slot}", t)


def _note(week: Week, effects: list[Any], t: float) -> None:
    for e in effects:
        if isinstance(e, Raise):
            week.alarms.setdefault(e.key, t)


def run(days: int = 7, seed: int = 7, healthy_weeks: int = 4) -> dict[str, Any]:
    normal = simulate(days, seed, eco_on=False)
    eco_week = simulate(days, seed, eco_on=True)
    # the daemon's default setpoint (4 °C, cut-in at the 5 °C limit): no room to set back, lights/fan only
    normal4, eco4 = (simulate(days, seed, eco_on=on, setpoint_c=4.0) for on in (False, True))
    # degradation: a refrigerant leak from day 1, and two spirals that start to bind
    leak_start, worn_start = 1.0 * DAY, 2.0 * DAY
    worn = {"A2": (worn_start, 0.25), "B4": (worn_start + 0.5 * DAY, 0.3)}
    leads: dict[str, float | None] = {}
    trend_leads: dict[str, dict[str, float | None]] = {"current": {}, "run_time": {}}
    trend_false = dict.fromkeys(trend_leads, 0)
    false_alarms, machine_weeks = 0, 0
    for i, s in enumerate((seed + 100, seed + 101)):
        w = simulate(days, s, eco_on=True, leak=RefrigerantLeak(leak_start, 0.2), worn=worn)
        fail = w.lockouts[0] if w.lockouts else None
        raised = w.alarms.get("service_soon:cooling:fridge")
        leads[f"leak_{i}"] = _lead(raised, fail)
        for slot in worn:
            leads[f"spiral_{slot}_{i}"] = _lead(w.alarms.get(f"service_soon:slot:{slot}"), w.jams.get(slot))
            for name, per in trend_leads.items():
                per[f"spiral_{slot}_{i}"] = _lead(w.trips.get(f"{name}:{slot}"), w.jams.get(slot))
        false_alarms += sum(
            1 for k in w.alarms if k.startswith("service_soon:slot:") and k.rsplit(":", 1)[1] not in worn
        )
        for key in w.trips:
            trend_false[key.split(":")[0]] += key.split(":")[1] not in worn
    for i in range(healthy_weeks):
        w = simulate(days, seed + 200 + i, eco_on=True, hot_day=(i % days) if i % 2 else None)
        false_alarms += len(w.alarms)
        for key in w.trips:
            trend_false[key.split(":")[0]] += 1
        machine_weeks += 1
    machine_weeks_total = machine_weeks * days / 7.0
    return {
        "days": days,
        "energy_saving_ratio": round(1.0 - eco_week.kwh / normal.kwh, 3),
        "kwh_normal": round(normal.kwh, 2),
        "kwh_eco": round(eco_week.kwh, 2),
        "compressor_h_normal": round(normal.compressor_h, 1),
        "compressor_h_eco": round(eco_week.compressor_h, 1),
        "compressor_saving_ratio": round(1.0 - eco_week.compressor_h / normal.compressor_h, 3),
        "energy_saving_ratio_at_4c": round(1.0 - eco4.kwh / normal4.kwh, 3),
        "food_safety_exceedances_at_4c": len(normal4.lockouts)
        + len(eco4.lockouts)
        + normal4.product_hours_above
        + eco4.product_hours_above,
        "food_safety_exceedances": len(normal.lockouts)
        + len(eco_week.lockouts)
        + normal.product_hours_above
        + eco_week.product_hours_above,
        "max_cabinet_c": {"normal": round(normal.max_cabinet_c, 2), "eco": round(eco_week.max_cabinet_c, 2)},
        "maintenance_lead_time_h": _shortest(leads),
        "lead_times_h": leads,
        "false_alarms_per_week": round(false_alarms / machine_weeks_total, 2),
        "current_lead_time_h": _shortest(trend_leads["current"]),
        "current_false_alarms_per_week": round(trend_false["current"] / machine_weeks_total, 2),
        "run_time_lead_time_h": _shortest(trend_leads["run_time"]),
        "run_time_false_alarms_per_week": round(trend_false["run_time"] / machine_weeks_total, 2),
        "spiral_lead_times_h": trend_leads,
        "healthy_weeks": machine_weeks,
        "targets": {"energy_saving_ratio": ">= 0.15", "food_safety_exceedances": "0"},
    }


def _shortest(leads: dict[str, float | None]) -> float:
    """The shortest warning over the runs; 0.0 when any failure came without (or before) a warning."""
    known = [v for v in leads.values() if v is not None]
    return round(min(known), 1) if known and len(known) == len(leads) else 0.0


def _lead(raised: float | None, failed: float | None) -> float | None:
    """Hours of warning: None when the failure came without (or before) the alarm, or never came."""
    if raised is None or failed is None or raised >= failed:
        return None
    return round((failed - raised) / 3600.0, 1)

"""The fridge-day summary: the daemon's audit read model (ledger counts), its status document
(in-memory service counters, temperature, device counters) and `/metrics`, checked against the script."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hw_sim.rigs.api import poll

if TYPE_CHECKING:
    from hw_sim.demo.fridge import FridgeDay

HOUR = 3600.0
REQUIRED_KINDS = {"temperature_high", "door_open_too_long", "device_offline", "food_safety_lockout"}
LIMIT_C = 5.0  # [temperature] food_safety_limit_c in plant_config


async def settled(day: FridgeDay, timeout_s: float = 5.0) -> dict[str, Any]:
    """The audit once every alarm raised has been cleared (the last clears land a poll or two after the
    script ends), or as it stands after `timeout_s`."""
    last: dict[str, Any] = {}

    async def quiet() -> bool:
        last.update(await day.rig.tech.audit())
        alarms = last["alarms"]
        return not alarms["active"] and alarms["raised"] == alarms["cleared"]

    try:
        await poll(quiet, timeout_s, every_s=0.1, what="alarms cleared")
    except TimeoutError:
        pass  # the summary says what is still active, and `ok` is False
    return last


async def summary(day: FridgeDay, t0: float, real_s: float) -> dict[str, Any]:
    audit = await settled(day)
    status = await day.rig.tech.status()
    metrics = await day.rig.tech.metrics()
    counters = status.get("counters", {})
    door, temp = counters.get("door", {}), counters.get("temperature", {})
    temperature = status.get("temperature") or {}
    max_c = metrics.get('vendedge_temperature_max_celsius{probe="cabinet"}', 0.0)
    alarms, lockouts, events = audit["alarms"], audit["lockouts"], audit["events"]
    tally = day.tally
    during = tally["during_lockout"]
    refused = int(temp.get("sales_refused_food_safety", 0))
    unlocks = int(events.get("door_unlock_requested", 0))
    ok = (lockouts["food_safety"] >= 1 and lockouts["food_safety_open"] == 0 and tally["cleared"]
          and tally["locked_after_failure"]
          and during.get("D3") == during.get("E1") == "food_safety_lockout"
          and during.get("A1") == during.get("B3") == "sold" and tally["after_clear"].get("D3") == "sold"
          and tally["after_silence"].get("D4") == "sold" and refused == 2
          and not alarms["active"] and alarms["raised"] == alarms["cleared"]
          and REQUIRED_KINDS <= set(alarms["kinds"]) and max_c > LIMIT_C and unlocks == door.get("unlocks"))
    return {
        "scenario": "fridge-day", "ok": bool(ok), "sim_hours": round((day.now() - t0) / HOUR, 2),
        "real_s": round(real_s, 1), "alarms_raised": alarms["raised"], "alarms_cleared": alarms["cleared"],
        "alarm_kinds": sorted(alarms["kinds"]), "alarms_active_at_end": alarms["active"],
        "food_safety_lockouts": lockouts["food_safety"], "max_cabinet_c": round(max_c, 2),
        "sales_refused_food_safety": refused, "sales": len(tally["sales"]), "sales_during_lockout": during,
        "door_visits": tally["door_visits"], "door_openings_seen": door.get("openings", 0),
        "door_unlocks_journaled": unlocks, "telemetry_minutes": audit["telemetry_minutes"],
        "compressor_duty_1h": temperature.get("duty_cycle_1h"), "defrosts": temp.get("defrosts", 0),
        "modbus_polls": {d["name"].removeprefix("plant."): d["counters"].get("ok", 0)
                         for d in status["devices"] if d["name"].startswith("plant.")},
    }

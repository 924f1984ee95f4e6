"""The cold-chain chart, drawn on the server as SVG geometry: a time axis in local time, a °C axis, the
cabinet and evaporator lines, and horizontal lines for the setpoint and the alarm limits.

`temperature_chart` returns plain numbers and strings; the template draws them and the live stream
sends the same dict, which the page's script redraws with text nodes only (no markup from data).
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from typing import Any

W, H = 480, 200  # drawn at most 640 px wide (CSS): 13-unit labels stay 9-17 px from a phone to a laptop
LEFT, RIGHT, TOP, BOTTOM = 30, 6, 8, 20  # room for the °C labels (left) and the times (bottom)
TICK_STEPS_S = [300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
MAX_X_TICKS = 7
# (key in the temperature read model, css class, label): the lines a technician judges the curve by
LIMITS = [
    ("setpoint_c", "setpoint", "setpoint"),
    ("high_alarm_c", "alarm", "high alarm"),
    ("low_alarm_c", "alarm", "low alarm"),
    ("food_safety_limit_c", "food", "food safety"),
]


def temperature_chart(t: dict[str, Any] | None, tz: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """Geometry for `t` (the `Queries.temperature()` read model); empty lines when there is no data."""
    empty: dict[str, Any] = {
        "w": W,
        "h": H,
        "cabinet": "",
        "evap": "",
        "limits": [],
        "xticks": [],
        "yticks": [],
        "lo": None,
        "hi": None,
        "frame": _frame(),
    }
    data: dict[str, Any] = t or {}
    # points: [ts, cabinet °C | None, evaporator °C | None, compressor on]
    pts: list[list[Any]] = [p for p in (data.get("points") or []) if p[1] is not None]
    if len(pts) < 2:
        return empty
    limits = [
        (key, cls, label, float(data[key]))
        for key, cls, label in LIMITS
        if isinstance(data.get(key), (int, float))
    ]
    vals: list[float] = [v for p in pts for v in (p[1], p[2]) if v is not None] + [v for *_, v in limits]
    lo, hi = math.floor(min(vals) - 0.5), math.ceil(max(vals) + 0.5)
    t0: float = pts[0][0]
    t1: float = max(pts[-1][0], t0 + 1)

    def x(ts: float) -> float:
        return round(LEFT + (ts - t0) / (t1 - t0) * (W - LEFT - RIGHT), 1)

    def y(v: float) -> float:
        return round(TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM), 1)

    def line(i: int) -> str:
        return " ".join(f"{x(p[0])},{y(p[i])}" for p in pts if p[i] is not None)

    return {
        **empty,
        "cabinet": line(1),
        "evap": line(2),
        "lo": lo,
        "hi": hi,
        "limits": [_limit(key, cls, f"{label} {v:g} °C", y(v)) for key, cls, label, v in limits],
        "xticks": [{"x": x(ts), "label": label} for ts, label in _time_ticks(t0, t1, tz)],
        "yticks": [{"y": y(v), "label": f"{v:g}"} for v in _value_ticks(lo, hi)],
    }


def _limit(key: str, cls: str, label: str, y: float) -> dict[str, Any]:
    """A limit line; the setpoint's label sits at the left end, the alarms' at the right, so the setpoint
    and a food-safety limit one degree above it do not print over each other."""
    left = key == "setpoint_c"
    return {
        "key": key,
        "cls": cls,
        "label": label,
        "y": y,
        "lx": LEFT + 3 if left else W - RIGHT - 3,
        "anchor": "start" if left else "end",
    }


def _frame() -> dict[str, float]:
    return {"x0": LEFT, "x1": W - RIGHT, "y0": TOP, "y1": H - BOTTOM}


def _time_ticks(t0: float, t1: float, tz: zoneinfo.ZoneInfo) -> list[tuple[float, str]]:
    """Ticks on round local clock times (every 5 min … 1 day, at most MAX_X_TICKS), labelled HH:MM."""
    step = next((s for s in TICK_STEPS_S if (t1 - t0) / s <= MAX_X_TICKS), TICK_STEPS_S[-1])
    start = dt.datetime.fromtimestamp(t0, tz)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    # count steps from local midnight so labels fall on round times even across a DST change
    k = math.ceil((start - midnight).total_seconds() / step)
    out: list[tuple[float, str]] = []
    while True:
        local = midnight + dt.timedelta(seconds=k * step)
        ts = local.timestamp()
        if ts > t1:
            return out
        out.append((ts, local.strftime("%H:%M" if step < 86400 else "%m-%d")))
        k += 1


def _value_ticks(lo: float, hi: float) -> list[float]:
    step = next(s for s in (1, 2, 5, 10, 20, 50) if (hi - lo) / s <= 6)
    first = math.ceil(lo / step) * step
    return [float(v) for v in range(int(first), int(hi) + 1, step)]

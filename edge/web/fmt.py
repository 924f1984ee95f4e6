"""How the page writes times and durations: local time in the configured zone, durations in human units.

The ledger stores UTC ISO-8601 (``2026-12-02T11:22:21.123Z``) and drivers stamp epoch seconds; a
technician reads the machine's wall clock. Pages and the live stream use these same functions, so a
value never changes shape when the live update replaces it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from edge.services.queries import human_duration

__all__ = ["ago", "human_duration", "local_time", "parse_time", "seen", "when", "zone_label"]


def parse_time(value: Any) -> dt.datetime | None:
    """A stored timestamp (ISO string, naive = UTC) or epoch seconds as an aware datetime; None if neither."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        t = dt.datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def local_time(value: Any, tz: zoneinfo.ZoneInfo, *, seconds: bool = True, millis: bool = False) -> str:
    """``2026-12-02 12:22:21`` in `tz` (what the machine's clock on the wall says); "–" for nothing.
    A value that is not a time is shown as it is (never a 500 for odd data)."""
    t = parse_time(value)
    if t is None:
        return "–" if value in (None, "") else str(value)
    try:
        local = t.astimezone(tz)
    except (OverflowError, ValueError):
        return str(value)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{text}.{local.microsecond // 1000:03d}" if millis else text


def ago(value: Any, now: float) -> str:
    """How long before `now` (epoch seconds) a timestamp was: ``4 s ago``, ``3 h 12 min ago``."""
    t = parse_time(value)
    if t is None:
        return "–"
    return f"{human_duration(max(0.0, now - t.timestamp()))} ago"


def zone_label(tz: zoneinfo.ZoneInfo, now: float) -> str:
    """``Europe/Berlin (CET, UTC+01:00)``: said once per page so every time shown is unambiguous."""
    local = dt.datetime.fromtimestamp(now, tz)
    offset = local.strftime("%z")
    if tz.key == "UTC":
        return "UTC"
    return f"{tz.key} ({local.tzname()}, UTC{offset[:3]}:{offset[3:]})"


def when(value: Any, tz: zoneinfo.ZoneInfo, now: float) -> str:
    """``2026-12-02 12:22:21 (3 min ago)``, or "–"."""
    return "–" if value in (None, "") else f"{local_time(value, tz)} ({ago(value, now)})"


def seen(seconds_ago: float | None) -> str:
    """A device's last answer: ``4 s ago``, or "–" when it never answered."""
    return "–" if seconds_ago is None else f"{human_duration(seconds_ago)} ago"

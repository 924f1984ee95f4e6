"""The HACCP log's read model for the page, the CSV and the API (SQL in `edge.ledger.haccp`)."""

from __future__ import annotations

from typing import Any

from edge.clock import iso
from edge.ledger import haccp
from edge.services.machine import Machine

DAY_S = 86_400.0
DEFAULT_LIMIT_C = 5.0
summary = haccp.summary
to_csv = haccp.to_csv


async def report(machine: Machine, days: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Hours of the last `days` (oldest first) and the period: since, until, days, limit_c, lockouts."""
    temperature = machine.services.temperature
    limit_c = float(temperature.limits.limit_c) if temperature is not None else DEFAULT_LIMIT_C
    now = machine.db.clock.wall()
    since, until = iso(now - days * DAY_S), iso(now)
    hours = await haccp.hourly(machine.db, since, until, limit_c=limit_c)
    period = {
        "since": since,
        "until": until,
        "days": days,
        "limit_c": limit_c,
        "lockouts": await haccp.lockouts(machine.db, since, until),
    }
    return hours, period

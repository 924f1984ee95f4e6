"""What a run can be checked against, for scripts, tests and the out-of-process demo (issue 15):

- `audit(machine)`: the ledger's counts (GET /api/v1/audit; the SQL is `edge.ledger.reports.audit`);
- `service_counters(machine)`: the counters that live only in memory (door openings and unlocks,
  food-safety refusals, defrosts, mains refusals), shown in GET /api/v1/status under `counters` and in
  GET /metrics as `vendedge_service_events_total{service,counter}` — stable names, docs/web-api.md.
"""

from __future__ import annotations

from typing import Any

from edge.ledger import reports
from edge.services.machine import Machine


async def audit(machine: Machine) -> dict[str, Any]:
    return await reports.audit(machine.db)


def service_counters(machine: Machine) -> dict[str, dict[str, int]]:
    """{service: {counter: n}} for the optional services this machine has (none: an empty dict)."""
    sv = machine.services
    out: dict[str, dict[str, int]] = {}
    if sv.door is not None:
        out["door"] = dict(sv.door.counters)
    if sv.temperature is not None:
        out["temperature"] = {**sv.temperature.counters, "defrosts": int(sv.temperature.defrost["count"])}
    if sv.power is not None:
        out["power"] = dict(sv.power.counters)
    return out


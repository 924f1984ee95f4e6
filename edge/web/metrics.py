"""GET /metrics: the page's counters and gauges in the Prometheus text format, written by prometheus-client.

Protected by a bearer token (`Secrets.metrics_token`); with no token configured the endpoint is off.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge.services.queries import Queries
from edge.web.auth import public
from edge.web.keys import METRICS_TOKEN, QUERIES, STATS

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _family(kind: str, name: str, help_: str, labels: list[str],
            samples: Iterable[tuple[list[str], float | None]]) -> Metric:
    fam: Any = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_, labels=labels)
    for values, value in samples:
        if value is not None:
            fam.add_metric([str(v) for v in values], float(value))
    return fam  # type: ignore[no-any-return]


async def families(q: Queries, web_stats: dict[str, Any]) -> list[Metric]:
    """Every metric, read from the live state at scrape time (prometheus-client does the exposition)."""
    d = await q.dashboard()
    s, t = d["sync"], d["sales_today"]
    door, temp = d["door"] or {}, d["temperature"] or {}
    stock = await q.stock()
    return [
        _family("gauge", "vendedge_info", "Machine identity.", ["machine_id", "version", "mode"],
                [([d["machine_id"], d["version"], d["mode"]], 1)]),
        _family("gauge", "vendedge_uptime_seconds", "Seconds since the daemon started.", [], [([], d["uptime_s"])]),
        _family("gauge", "vendedge_device_online", "1 when the device answers.", ["device"],
                [([dev["name"]], int(dev["online"])) for dev in d["devices"]]),
        # a counter's name must not carry its type: vendedge_device_events_total (not *_counter_total)
        _family("counter", "vendedge_device_events", "Driver counters per device (frames, errors, retries).",
                ["device", "counter"],
                [([dev["name"], k], v) for dev in d["devices"] for k, v in dev["counters"].items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]),
        _family("gauge", "vendedge_alarms_active", "Active alarms.", [], [([], len(d["alarms"]))]),
        _family("gauge", "vendedge_food_safety_lockouts_active", "Uncleared food-safety lockouts.", [],
                [([], len(d["lockouts"]))]),
        _family("gauge", "vendedge_unreconciled_vends", "Vends whose outcome is not known yet.", [],
                [([], d["unreconciled_vends"])]),
        _family("gauge", "vendedge_outbox_backlog", "Records waiting for the cloud.", [], [([], s["backlog"])]),
        _family("gauge", "vendedge_outbox_parked", "Records the cloud rejected.", [], [([], s["parked"])]),
        _family("gauge", "vendedge_sync_online", "1 when the cloud link is up.", [], [([], int(s["online"]))]),
        _family("gauge", "vendedge_orders_today", "Orders created today (UTC).", ["status"],
                [(["all"], t["orders"]), (["sold"], t["sold"]), (["failed"], t["failed"])]),
        _family("gauge", "vendedge_revenue_today_minor", "Completed sales today in minor units.", [],
                [([], t["revenue"])]),
        _family("gauge", "vendedge_refunds_due", "Failed paid orders awaiting refund.", [], [([], t["refunds_due"])]),
        _family("gauge", "vendedge_low_stock_slots", "Slots at or below the low-stock level.", [],
                [([], d["low_stock"])]),
        _family("gauge", "vendedge_stock_items", "Items per slot.", ["slot"], [([r["slot_id"]], r["count"]) for r in stock]),
        _family("gauge", "vendedge_door_closed", "1 when the door is closed.", [],
                [([], int(door["closed"]) if "closed" in door else None)]),
        _family("gauge", "vendedge_door_locked", "1 when the door is locked.", [],
                [([], int(door["locked"]) if "locked" in door else None)]),
        _family("gauge", "vendedge_temperature_celsius", "Latest temperatures.", ["probe"],
                [(["cabinet"], temp.get("cabinet_c")), (["evaporator"], temp.get("evaporator_c"))]),
        _family("gauge", "vendedge_compressor_on", "1 while the compressor runs.", [],
                [([], None if temp.get("compressor_on") is None else int(temp["compressor_on"]))]),
        _family("gauge", "vendedge_compressor_duty_ratio", "Share of the last hour the compressor ran (0..1).", [],
                [([], temp.get("duty_cycle_1h"))]),
        _family("gauge", "vendedge_temperature_max_celsius", "Highest reading since the daemon started.", ["probe"],
                [(["cabinet"], temp.get("max_cabinet_c"))]),
        _family("counter", "vendedge_service_events", "In-memory service counters since start (door openings "
                "and unlocks, food-safety refusals, defrosts, ...).", ["service", "counter"],
                [([svc, k], v) for svc, cs in sorted(d["counters"].items()) for k, v in sorted(cs.items())]),
        _family("counter", "vendedge_web_responses", "Web responses by status class.", ["code"],
                [([k], v) for k, v in sorted(web_stats["responses"].items())]),
        _family("gauge", "vendedge_web_sse_clients", "Open live-update streams.", [],
                [([], web_stats["sse_clients"]())]),
    ]


class _Snapshot:
    """A collector over families already read (the reads are async; prometheus-client's collect is not)."""

    def __init__(self, fams: list[Metric]) -> None:
        self.fams = fams

    def collect(self) -> Iterator[Metric]:
        return iter(self.fams)


async def render(q: Queries, web_stats: dict[str, Any]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(await families(q, web_stats)))
    return generate_latest(registry).decode()


@public
async def metrics(request: web.Request) -> web.Response:
    """Bearer-token check here (not the session middleware): Prometheus has no cookie jar."""
    token: str = request.app[METRICS_TOKEN]
    if not token:
        return web.Response(status=404, text="metrics disabled: set metrics_token in the secrets file")
    # surrogateescape: a header that is not UTF-8 is compared as its raw bytes (and fails), never a 500
    sent = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(sent, f"Bearer {token}".encode()):
        return web.Response(status=401, text="bearer token required", headers={"WWW-Authenticate": "Bearer"})
    body = await render(request.app[QUERIES], request.app[STATS])
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

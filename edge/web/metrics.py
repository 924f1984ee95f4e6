"""GET /metrics: the page's counters and gauges in the Prometheus text format (version 0.0.4).

Protected by a bearer token (`Secrets.metrics_token`); with no token configured the endpoint is off.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from edge.services.queries import Queries
from edge.web.auth import public
from edge.web.keys import METRICS_TOKEN, QUERIES, STATS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, Any]) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._seen: set[str] = set()

    def metric(self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, Any], float | None]]) -> None:
        if name not in self._seen:
            self._seen.add(name)
            self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            if value is not None:
                self.lines.append(f"{name}{_labels(labels)} {float(value):g}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


async def render(q: Queries, web_stats: dict[str, Any]) -> str:
    d = await q.dashboard()
    w = Writer()
    w.metric("vendedge_info", "gauge", "Machine identity.", [({"machine_id": d["machine_id"],
                                                              "version": d["version"], "mode": d["mode"]}, 1)])
    w.metric("vendedge_uptime_seconds", "gauge", "Seconds since the daemon started.", [({}, d["uptime_s"])])
    w.metric("vendedge_device_online", "gauge", "1 when the device answers.",
             [({"device": dev["name"]}, int(dev["online"])) for dev in d["devices"]])
    w.metric("vendedge_device_counter_total", "counter", "Driver counters per device (frames, errors, retries).",
             [({"device": dev["name"], "counter": k}, v) for dev in d["devices"] for k, v in dev["counters"].items()
              if isinstance(v, (int, float))])
    w.metric("vendedge_alarms_active", "gauge", "Active alarms.", [({}, len(d["alarms"]))])
    w.metric("vendedge_food_safety_lockouts_active", "gauge", "Uncleared food-safety lockouts.",
             [({}, len(d["lockouts"]))])
    w.metric("vendedge_unreconciled_vends", "gauge", "Vends whose outcome is not known yet.",
             [({}, d["unreconciled_vends"])])
    s = d["sync"]
    w.metric("vendedge_outbox_backlog", "gauge", "Records waiting for the cloud.", [({}, s["backlog"])])
    w.metric("vendedge_outbox_parked", "gauge", "Records the cloud rejected.", [({}, s["parked"])])
    w.metric("vendedge_sync_online", "gauge", "1 when the cloud link is up.", [({}, int(s["online"]))])
    t = d["sales_today"]
    w.metric("vendedge_orders_today", "gauge", "Orders created today (UTC).",
             [({"status": "all"}, t["orders"]), ({"status": "sold"}, t["sold"]), ({"status": "failed"}, t["failed"])])
    w.metric("vendedge_revenue_today_minor", "gauge", "Completed sales today in minor units.", [({}, t["revenue"])])
    w.metric("vendedge_refunds_due", "gauge", "Failed paid orders awaiting refund.", [({}, t["refunds_due"])])
    w.metric("vendedge_low_stock_slots", "gauge", "Slots at or below the low-stock level.", [({}, d["low_stock"])])
    stock = await q.stock()
    w.metric("vendedge_stock_items", "gauge", "Items per slot.", [({"slot": r["slot_id"]}, r["count"]) for r in stock])
    door = d["door"] or {}
    w.metric("vendedge_door_closed", "gauge", "1 when the door is closed.",
             [({}, int(door["closed"]) if "closed" in door else None)])
    w.metric("vendedge_door_locked", "gauge", "1 when the door is locked.",
             [({}, int(door["locked"]) if "locked" in door else None)])
    temp = d["temperature"] or {}
    w.metric("vendedge_temperature_celsius", "gauge", "Latest temperatures.",
             [({"probe": "cabinet"}, temp.get("cabinet_c")), ({"probe": "evaporator"}, temp.get("evaporator_c"))])
    w.metric("vendedge_compressor_on", "gauge", "1 while the compressor runs.",
             [({}, None if temp.get("compressor_on") is None else int(temp["compressor_on"]))])
    w.metric("vendedge_web_responses_total", "counter", "Web responses by status class.",
             [({"code": k}, v) for k, v in sorted(web_stats["responses"].items())])
    w.metric("vendedge_web_sse_clients", "gauge", "Open live-update streams.", [({}, web_stats["sse_clients"]())])
    return w.text()


@public
async def metrics(request: web.Request) -> web.Response:
    """Bearer-token check here (not the session middleware): Prometheus has no cookie jar."""
    token: str = request.app[METRICS_TOKEN]
    if not token:
        return web.Response(status=404, text="metrics disabled: set metrics_token in the secrets file")
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return web.Response(status=401, text="bearer token required", headers={"WWW-Authenticate": "Bearer"})
    body = await render(request.app[QUERIES], request.app[STATS])
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

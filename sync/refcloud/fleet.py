"""`/fleet`: a small server-rendered HTML overview of the fleet (no external assets)."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from sync.refcloud.app import CLOCK, STORE, iso, run_db

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vendedge fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<meta http-equiv="refresh" content="15">
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}}
table{{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%}}
@media (max-width:600px){{body{{margin:.5rem}} th,td{{padding:.3rem .4rem}}}}
th,td{{border-bottom:1px solid #ccc;padding:.35rem .7rem;text-align:left}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.alarm{{color:#b00;font-weight:600}} .stale{{color:#888}} .offline{{color:#b00}}
</style></head><body>
<h1>Fleet</h1>
<p>{count} machines &middot; generated {now}</p>
<table id="fleet"><thead><tr><th>Machine</th><th>Last seen</th><th>Backlog</th>
<th>Link</th><th>Active alarms</th><th>Orders today</th><th>Sales today</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _link(state: str | None) -> str:
    """MQTT machines: online (birth) / offline (Last Will or goodbye); HTTPS machines: blank."""
    return f'<td class="link {state}">{state}</td>' if state in ("online", "offline") else "<td></td>"


def _row(m: dict[str, Any], now: float) -> str:
    last = m["last_seen"]
    stale = last is None or now - last > 300
    seen = "never" if last is None else iso(last)
    alarms = (f'<span class="alarm">{m["active_alarms"]}: {html.escape(m["alarm_codes"] or "")}'
              "</span>" if m["active_alarms"] else "0")
    backlog = "" if m["backlog"] is None else str(m["backlog"])
    return (f'<tr data-machine="{html.escape(m["machine_id"])}">'
            f'<td>{html.escape(m["machine_id"])}</td>'
            f'<td class="{"stale" if stale else ""}">{seen}</td>'
            f'<td class="num">{backlog}</td>{_link(m.get("link"))}<td>{alarms}</td>'
            f'<td class="num">{m["orders_today"]}</td>'
            f'<td class="num">{_money(m["sales_today"])}</td></tr>')


async def fleet_page(request: web.Request) -> web.Response:
    """GET /fleet: machines, last seen, backlog, active alarms, today's orders and sales."""
    now = request.app[CLOCK]()
    machines = await run_db(request.app, request.app[STORE].machines, iso(now)[:10])
    rows = "\n".join(_row(m, now) for m in machines)
    body = PAGE.format(count=len(machines), now=iso(now), rows=rows)
    return web.Response(text=body, content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fleet", fleet_page)

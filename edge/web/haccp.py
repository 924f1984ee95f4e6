"""HACCP temperature log on the technician page: GET /haccp (printable), GET /haccp.csv and
GET /api/v1/haccp (JSON, for remote monitoring).

`?days=N` (1..400, default 7 on the page, 90 in the CSV) picks the period ending now. Any
logged-in user may read it: a food inspector is shown the page or handed the CSV.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.services import haccp
from edge.web.views import q_of, render

MAX_DAYS = 400


def _days(request: web.Request, default: int) -> int:
    raw = request.query.get("days", str(default))
    # ASCII digits only: "²".isdigit() is true and int("²") raises ValueError (it was a 500)
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_DAYS:
        raise web.HTTPBadRequest(text=f"days must be a whole number from 1 to {MAX_DAYS}")
    return int(raw)


async def _log(request: web.Request, days: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return await haccp.report(q_of(request).m, days)


async def haccp_page(request: web.Request) -> web.Response:
    days = _days(request, 7)
    hours, period = await _log(request, days)
    return render(
        request, "haccp.html", {"hours": list(reversed(hours)), "period": period, "sum": haccp.summary(hours)}
    )


async def haccp_csv(request: web.Request) -> web.Response:
    days = _days(request, 90)
    hours, _ = await _log(request, days)
    name = f"haccp_{q_of(request).m.machine_id}_{days}d.csv"
    return web.Response(
        body=haccp.to_csv(hours).encode(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def haccp_api(request: web.Request) -> web.Response:
    days = _days(request, 7)
    hours, period = await _log(request, days)
    return web.json_response({"period": period, "summary": haccp.summary(hours), "hours": hours})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/haccp", haccp_page)
    app.router.add_get("/haccp.csv", haccp_csv)
    app.router.add_get("/api/v1/haccp", haccp_api)

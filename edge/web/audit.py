"""GET /api/v1/audit: the ledger's counts a run is checked against (scripts, tests, the out-of-process
demo). Viewer and technician accounts; documented in docs/web-api.md."""

from __future__ import annotations

from aiohttp import web

from edge.services import audit as audit_model
from edge.web.api import PREFIX
from edge.web.keys import QUERIES


async def audit(request: web.Request) -> web.Response:
    return web.json_response(await audit_model.audit(request.app[QUERIES].m))


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/audit", audit)

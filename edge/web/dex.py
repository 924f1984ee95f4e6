"""DEX download on the technician page: GET /dex.txt reads without reset (any logged-in user);
POST /dex/interim is an interim read that resets the interim counters (technician only, CSRF-checked
like every POST)."""

from __future__ import annotations

from aiohttp import web

from edge.services.dex import DexService
from edge.web.auth import technician
from edge.web.keys import USER_NAME
from edge.web.views import q_of


def _service(request: web.Request) -> DexService:
    m = q_of(request).m
    return DexService.for_machine(m.db, m.machine_id, "")


def _download(text: str, name: str) -> web.Response:
    return web.Response(body=text.encode("ascii"), content_type="text/plain", charset="ascii",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def dex_all(request: web.Request) -> web.Response:
    read = await _service(request).read(interim=False, actor=request[USER_NAME])
    return _download(read.text, f"dex_{read.read_id}_all.txt")


@technician
async def dex_interim(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("confirm") != "yes":
        raise web.HTTPBadRequest(text="tick 'reset the interim counters' (confirm=yes) to take an interim read")
    read = await _service(request).read(interim=True, actor=request[USER_NAME])
    return _download(read.text, f"dex_{read.read_id}_interim.txt")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dex.txt", dex_all)
    app.router.add_post("/dex/interim", dex_interim)

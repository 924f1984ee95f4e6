"""Prices on the technician page: GET /prices and GET /api/v1/prices — every slot's price now under
the offline price rules, the rule that sets it, and the rules in force (issue 18)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.services.pricing import PriceBook
from edge.web.views import q_of, render


async def _board(request: web.Request) -> dict[str, Any]:
    m = q_of(request).m
    book = m.vend.prices or PriceBook(m.db)
    return await book.board()


async def prices_page(request: web.Request) -> web.Response:
    return render(request, "prices.html", {"b": await _board(request)})


async def prices_api(request: web.Request) -> web.Response:
    return web.json_response(await _board(request))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/prices", prices_page)
    app.router.add_get("/api/v1/prices", prices_api)

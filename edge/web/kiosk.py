"""The kiosk API: the machine's own touchscreen app lists what a customer can buy and sells it.

`GET /api/v1/kiosk/slots` and `POST /api/v1/kiosk/sell {"slot": "A1", "payment_ref": "card:x"}`, for
the `kiosk` role and technicians (auth.py), under the session and CSRF rules of the rest of /api/v1.
Hostile bodies get a 400 with a JSON error; a refused sale is a 409 with its reason (api.py `_run`).
Documented in docs/web-api.md.
"""

from __future__ import annotations

import re

from aiohttp import web

from edge.services.kiosk import PAYMENT_REF_MAX, Kiosk
from edge.web import api
from edge.web.auth import json_error, kiosk
from edge.web.keys import QUERIES

KIOSK = web.AppKey("kiosk", Kiosk)
SLOT_ID = api.SLOT_ID
PAYMENT_REF = re.compile(rf"[\x21-\x7e]{{0,{PAYMENT_REF_MAX}}}")  # printable ASCII, no spaces


@kiosk
async def slots(request: web.Request) -> web.Response:
    return web.json_response({"slots": await request.app[KIOSK].slots()})


@kiosk
async def sell(request: web.Request) -> web.Response:
    body = await api._body(request)
    slot, ref = body.get("slot"), body.get("payment_ref", "")
    if ref is None:
        ref = ""
    if not isinstance(slot, str) or not SLOT_ID.fullmatch(slot):
        return json_error(400, "bad_request", 'slot: a slot id string such as "A1"')
    if not isinstance(ref, str) or not PAYMENT_REF.fullmatch(ref):
        return json_error(400, "bad_request", f"payment_ref: printable ASCII without spaces, at most "
                                              f"{PAYMENT_REF_MAX} characters (omit it to pay at the reader)")
    k = request.app[KIOSK]
    if not await k.known_slot(slot):
        return json_error(400, "unknown_slot", f"no slot {slot} in the planogram")
    return await api._run(request, k.sell(slot, ref))


def add_routes(app: web.Application) -> None:
    q = app[QUERIES]
    app[KIOSK] = Kiosk(q.m, q.invalidate)
    app.router.add_get(f"{api.PREFIX}/kiosk/slots", slots)
    app.router.add_post(f"{api.PREFIX}/kiosk/sell", sell)

"""Admin API of the reference cloud (Bearer admin token; the fleet page also takes Basic auth).

Machines, catalog/planogram documents (validated with Planogram.from_doc), prices, settings,
commands and read-only views of what the machines pushed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from edge.core.catalog import CatalogInvalid, Planogram
from edge.core.offline_token import VERSION, TokenRejected, encode, validate_payload
from edge.core.pricing import PricingInvalid, RuleSet
from sync import signing
from sync.refcloud.app import (
    ADMIN_TOKEN,
    CLOCK,
    SECRETS,
    STORE,
    Handler,
    bad_json,
    error,
    iso,
    run_db,
    wake,
)

log = structlog.get_logger(__name__)
MACHINE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
PROTECTED = ("/admin", "/fleet")
DEFAULT_TOKEN_TTL_S = 900
MAX_TOKEN_TTL_S = 7 * 86400
MAX_COMMAND_TTL_S = 365 * 86400


def _token_ok(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    try:  # aiohttp keeps non-UTF-8 header bytes as surrogates, which .encode() refuses
        given = value.encode()
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given, request.app[ADMIN_TOKEN].encode())


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /admin and /fleet request needs the admin token."""
    if request.path.startswith(PROTECTED) and not _token_ok(request):
        return web.json_response({"error": "unauthorized"}, status=401,
                                 headers={"WWW-Authenticate": 'Basic realm="refcloud"'})
    return await handler(request)


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise bad_json(exc) from exc


def _machine(request: web.Request) -> str:
    machine_id = request.match_info["machine_id"]
    if machine_id not in request.app[SECRETS]:
        raise web.HTTPNotFound(text=json.dumps({"error": "unknown_machine"}),
                               content_type="application/json")
    return machine_id


async def register_machine(request: web.Request) -> web.Response:
    """POST /admin/machines {machine_id, secret_hex?} → 201 {machine_id, secret_hex}."""
    doc = await _json(request)
    machine_id = doc.get("machine_id") if isinstance(doc, dict) else None
    if not isinstance(machine_id, str) or not MACHINE_ID_RE.match(machine_id):
        return error(400, "bad_machine_id")
    try:
        given = bytes.fromhex(doc["secret_hex"]) if doc.get("secret_hex") else None
    except (TypeError, ValueError):
        return error(400, "bad_secret")
    if given is not None and len(given) < 16:
        return error(400, "bad_secret", reason="at least 16 bytes")
    secret = await run_db(request.app, request.app[STORE].register_machine, machine_id, given,
                          request.app[CLOCK]())
    request.app[SECRETS][machine_id] = secret
    log.info("machine_registered", machine_id=machine_id)
    return web.json_response({"machine_id": machine_id, "secret_hex": secret.hex()}, status=201)


async def list_machines(request: web.Request) -> web.Response:
    today = iso(request.app[CLOCK]())[:10]
    rows = await run_db(request.app, request.app[STORE].machines, today)
    return web.json_response({"machines": rows})


def _validated(doc: Any, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The doc to store: a valid planogram document plus a `settings` object."""
    if not isinstance(doc, Mapping):
        raise CatalogInvalid("document must be an object")
    Planogram.from_doc(doc)
    merged = dict(settings or {})
    if "settings" in doc:
        if not isinstance(doc["settings"], Mapping):
            raise CatalogInvalid("document.settings must be an object")
        merged.update(doc["settings"])
    sp = merged.get("setpoint_c")
    if sp is not None and (not isinstance(sp, int | float) or isinstance(sp, bool)
                           or not -30 <= sp <= 30):
        raise CatalogInvalid(f"settings.setpoint_c must be a number in -30..30, got {sp!r}")
    return dict(doc, settings=merged)


async def _store_config(request: web.Request, machine_id: str, doc: Any,
                        settings: Mapping[str, Any] | None) -> web.Response:
    try:
        valid = _validated(doc, settings)
        pricing = valid.get("pricing")
        RuleSet.from_doc(pricing)  # the machine refuses what does not validate: say so here first
    except (CatalogInvalid, PricingInvalid) as exc:
        return error(400, "invalid_doc", reason=str(exc))
    if pricing is not None and machine_id in request.app[SECRETS]:  # prices are money: the machine checks this
        valid["pricing"] = {**pricing, "signature": signing.sign_command(request.app[SECRETS][machine_id], pricing)}
    version = await run_db(request.app, request.app[STORE].put_config, machine_id, valid)
    wake(request.app, machine_id)  # the MQTT side publishes the new retained config at once
    log.info("config_stored", machine_id=machine_id, version=version)
    return web.json_response({"version": version})


async def _current(request: web.Request, machine_id: str) -> dict[str, Any]:
    cfg = await run_db(request.app, request.app[STORE].config, machine_id)
    if cfg is None:
        raise web.HTTPConflict(text=json.dumps({"error": "no_config"}),
                               content_type="application/json")
    return cfg[1]


async def put_config(request: web.Request) -> web.Response:
    """PUT /admin/machines/{id}/config <catalog+planogram doc [+ settings]> → {version} or 400."""
    machine_id = _machine(request)
    doc = await _json(request)
    old = await run_db(request.app, request.app[STORE].config, machine_id)
    return await _store_config(request, machine_id, doc, old[1].get("settings") if old else None)


async def set_price(request: web.Request) -> web.Response:
    """POST /admin/machines/{id}/prices {sku_id, price} → a new config version."""
    machine_id = _machine(request)
    body = await _json(request)
    doc = await _current(request, machine_id)
    skus = [dict(s) for s in doc["skus"]]
    target = [s for s in skus if isinstance(body, dict) and s["sku_id"] == body.get("sku_id")]
    if not target:
        return error(400, "unknown_sku")
    target[0]["price"] = body.get("price")
    return await _store_config(request, machine_id, dict(doc, skus=skus), None)


async def set_settings(request: web.Request) -> web.Response:
    """PUT /admin/machines/{id}/settings {setpoint_c, …} (merged) → a new config version."""
    machine_id = _machine(request)
    body = await _json(request)
    if not isinstance(body, dict):
        return error(400, "bad_request", reason="settings must be an object")
    doc = await _current(request, machine_id)
    merged = dict(doc.get("settings", {}), **body)
    return await _store_config(request, machine_id, dict(doc, settings=merged), None)


async def enqueue_command(request: web.Request) -> web.Response:
    """POST /admin/machines/{id}/commands {name, args, ttl_s?} → 201 {command_id}."""
    machine_id = _machine(request)
    body = await _json(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return error(400, "bad_request", reason="name required")
    args = body.get("args", {})
    ttl = body.get("ttl_s")
    if not isinstance(args, dict) or (ttl is not None and (
            not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= MAX_COMMAND_TTL_S)):
        return error(400, "bad_request",
                     reason=f"args must be an object, ttl_s a number in (0, {MAX_COMMAND_TTL_S}]")
    now = request.app[CLOCK]()
    expires_ts = now + ttl if ttl is not None else None
    command_id = await run_db(request.app, request.app[STORE].enqueue_command, machine_id,
                              body["name"], args, iso(now),
                              iso(expires_ts) if expires_ts is not None else None, expires_ts)
    wake(request.app, machine_id)
    log.info("command_enqueued", machine_id=machine_id, command_id=command_id, name=body["name"])
    return web.json_response({"command_id": command_id}, status=201)


def _view(method_name: str) -> Handler:
    async def view(request: web.Request) -> web.Response:
        machine_id = _machine(request)
        data = await run_db(request.app, getattr(request.app[STORE], method_name), machine_id)
        return web.json_response(data if isinstance(data, dict) else {method_name: data})

    return view


async def token_key(request: web.Request) -> web.Response:
    """GET /admin/token-key → {alg, kid, public_key, keys}: the offline-token verification keys."""
    doc = await run_db(request.app, request.app[STORE].token_public_keys, request.app[CLOCK]())
    return web.json_response(doc)


def _token_request(body: Any, machine_id: str, default_currency: str) -> dict[str, Any]:
    """Validate POST /tokens body → {scope, cust, limit, cur, ttl}; raises ValueError with a reason."""
    if not isinstance(body, dict):
        raise ValueError("body must be an object")
    scope_kind = body.get("scope", "machine")
    if scope_kind == "machine":
        scope = f"machine:{machine_id}"
    elif scope_kind == "fleet" and isinstance(body.get("fleet"), str) and MACHINE_ID_RE.match(body["fleet"]):
        scope = f"fleet:{body['fleet']}"
    else:
        raise ValueError("scope must be 'machine' or 'fleet' (with a fleet name)")
    ttl = body.get("ttl_s", DEFAULT_TOKEN_TTL_S)
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl_s must be a number 1..{MAX_TOKEN_TTL_S}")
    return {"scope": scope, "cust": body.get("customer_ref"), "limit": body.get("limit"),
            "cur": body.get("currency", default_currency), "ttl": ttl}


async def issue_token(request: web.Request) -> web.Response:
    """POST /admin/machines/{id}/tokens {customer_ref, limit, currency?, ttl_s?, scope?, fleet?}
    → 201 {token, kid, claims}: an Ed25519-signed offline token (docs/protocols/offline-token.md)."""
    machine_id = _machine(request)
    app = request.app
    cfg = await run_db(app, app[STORE].config, machine_id)
    try:
        req = _token_request(await _json(request), machine_id, (cfg[1].get("currency") if cfg else None) or "EUR")
    except ValueError as exc:
        return error(400, "bad_request", reason=str(exc))
    now = int(app[CLOCK]())
    kid, key = await run_db(app, app[STORE].token_key, float(now))
    try:
        claims = validate_payload({"v": VERSION, "kid": kid, "scope": req["scope"], "cust": req["cust"],
                                   "limit": req["limit"], "cur": req["cur"], "iat": now,
                                   "exp": now + int(req["ttl"]), "nonce": secrets.token_urlsafe(16)})
    except TokenRejected as exc:
        return error(400, "bad_request", reason=exc.detail)
    if await run_db(app, app[STORE].is_revoked, claims.customer_ref, kid):
        return error(409, "revoked", reason=f"customer {claims.customer_ref} is revoked")
    token = encode(claims, key.sign)
    await run_db(app, app[STORE].record_token, claims.to_payload())
    log.info("offline_token_issued", machine_id=machine_id, scope=claims.scope, kid=kid,
             customer=claims.customer_ref, limit=claims.limit, expires_at=claims.expires_at)
    return web.json_response({"token": token, "kid": kid, "claims": claims.to_payload()}, status=201)


def _string_list(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and 1 <= len(v) <= 128 for v in value):
        raise ValueError(f"{key} must be a list of strings of 1..128 characters")
    return value


async def revoke_tokens(request: web.Request) -> web.Response:
    """POST /admin/token-revocations {customers?, kids?, machine_ids?, reason?} → 201 {commands}.
    Recorded in the cloud (no new tokens for them) and queued as a `revoke` command — signed per
    machine like every command — to the listed machines, or to every registered machine."""
    app = request.app
    known: dict[str, bytes] = app[SECRETS]
    body = await _json(request)
    try:
        if not isinstance(body, dict):
            raise ValueError("body must be an object")
        customers, kids = _string_list(body, "customers"), _string_list(body, "kids")
        machines = _string_list(body, "machine_ids") or sorted(known)
    except ValueError as exc:
        return error(400, "bad_request", reason=str(exc))
    unknown = [m for m in machines if m not in known]
    if not customers and not kids or unknown:
        return error(400, "bad_request", reason=f"unknown machines {unknown}" if unknown
                     else "customers and/or kids required")
    reason = str(body.get("reason", ""))[:200]
    now = app[CLOCK]()
    await run_db(app, app[STORE].revoke_tokens, customers, kids, reason, now)
    args = {"customers": customers, "kids": kids, "reason": reason}
    commands = {}
    for machine_id in machines:
        commands[machine_id] = await run_db(app, app[STORE].enqueue_command, machine_id, "revoke", args,
                                            iso(now), None, None)
        wake(app, machine_id)
    log.info("offline_tokens_revoked", customers=len(customers), kids=len(kids), machines=len(machines))
    return web.json_response({"commands": commands}, status=201)


def add_routes(app: web.Application) -> None:
    m = "/admin/machines/{machine_id}"
    app.router.add_post("/admin/machines", register_machine)
    app.router.add_get("/admin/machines", list_machines)
    app.router.add_put(f"{m}/config", put_config)
    app.router.add_post(f"{m}/prices", set_price)
    app.router.add_put(f"{m}/settings", set_settings)
    app.router.add_post(f"{m}/commands", enqueue_command)
    app.router.add_get(f"{m}/commands", _view("commands"))
    app.router.add_get(f"{m}/orders", _view("orders"))
    app.router.add_get(f"{m}/offline-orders", _view("offline_orders"))
    app.router.add_get(f"{m}/records", _view("records_summary"))
    app.router.add_get(f"{m}/record_ids", _view("record_ids"))
    app.router.add_get(f"{m}/stock", _view("stock"))
    app.router.add_get(f"{m}/alarms", _view("alarms"))
    app.router.add_post(f"{m}/tokens", issue_token)
    app.router.add_get("/admin/token-key", token_key)
    app.router.add_post("/admin/token-revocations", revoke_tokens)

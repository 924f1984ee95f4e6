"""Login, sessions, CSRF and roles for the diagnostics app.

Every handler carries an access level (`public`, `viewer` — the default —, `technician`, `kiosk` or
`session`); one middleware enforces it before the handler runs, so a refused request never reaches the
machine:
- no valid session → pages redirect to /login, the API and the live stream answer 401;
- a state-changing method (POST/PUT/PATCH/DELETE) without the session's CSRF token → 403;
- a route the account's role may not reach (`ROLE_LEVELS`) → 403: a viewer reads, a technician reads
  and acts, a kiosk account (the machine's own touchscreen app) reaches only `kiosk` routes and the
  `session` ones every account has (who am I, log out).
The login form itself is protected by a double-submit token (cookie + form field).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import secrets
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from edge.core.accounts import SESSION_TTL_S, AuthError, WebSession
from edge.services.queries import human_duration
from edge.web.keys import ALLOWED_HOSTS, QUERIES, SESSION, TOKEN, USER_NAME

log = structlog.get_logger(__name__)

SESSION_COOKIE = "vendedge_session"
LOGIN_COOKIE = "vendedge_login"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOGIN_PATHS = {"/login", "/api/v1/login"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


LEVELS = ("public", "viewer", "technician", "kiosk", "session")
# the access levels each role may reach ("public" needs no session); an unknown role reaches nothing
ROLE_LEVELS: dict[str, frozenset[str]] = {
    "technician": frozenset({"viewer", "technician", "kiosk", "session"}),
    "viewer": frozenset({"viewer", "session"}),
    "kiosk": frozenset({"kiosk", "session"}),
}
REFUSALS = {"technician": "this account may only read", "kiosk": "only a kiosk or technician account may sell",
            "viewer": "this account may only use the kiosk routes"}


def access(level: str) -> Callable[[Handler], Handler]:
    """Mark a handler with one of LEVELS."""
    assert level in LEVELS

    def mark(fn: Handler) -> Handler:
        fn.access = level  # type: ignore[attr-defined]
        return fn
    return mark


public = access("public")
technician = access("technician")
kiosk = access("kiosk")
session = access("session")


def level_of(handler: Any) -> str:
    return str(getattr(handler, "access", "viewer"))


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/live"


def redirect(location: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def json_error(status: int, code: str, detail: str = "", **extra: Any) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


def refuse(request: web.Request, status: int, code: str, detail: str) -> web.StreamResponse:
    log.warning("web_request_refused", path=request.path, method=request.method, status=status, code=code,
                user=request.get(USER_NAME, ""))
    if is_api(request):
        return json_error(status, code, detail)
    if status == 401:
        nxt = request.path_qs if request.method in SAFE_METHODS else "/"
        return redirect("/login?" + urllib.parse.urlencode({"next": nxt}), status=302)
    return web.Response(status=status, text=f"{status}: {detail}", content_type="text/plain")


async def csrf_token_of(request: web.Request) -> str:
    header = request.headers.get("X-CSRF-Token", "")
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get("csrf", "")
        return value if isinstance(value, str) else ""
    return ""


def host_allowed(host: str, extra: frozenset[str] = frozenset()) -> bool:
    """The Host header names this machine: an IP literal, localhost, a `.local` name, its own hostname or
    a name in `web.allowed_hosts` (`extra`). Anything else is a name an attacker controls (DNS rebinding)
    and is refused."""
    name = urllib.parse.urlsplit("//" + host).hostname if host else None
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    own = socket.gethostname().lower()
    return name in ("localhost", own, f"{own}.local") or name.endswith(".localhost") or name in extra


def origin_allowed(request: web.Request) -> bool:
    """A state-changing request either sends no Origin (old clients, curl) or this very origin.
    `Origin: null` (sandboxed frames, data: URLs, some redirects) is never this origin."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}" or (
        request.headers.get("X-Forwarded-Proto") == "https" and origin == f"https://{request.host}")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception  # unknown path or method: 404/405 for everyone
    level = level_of(request.match_info.handler)
    # cookie-bearing routes and the login form: a foreign Host is DNS rebinding; token routes (/metrics)
    # and static files carry no ambient authority, so a scraper may use any DNS name
    if (level != "public" or request.path in LOGIN_PATHS) and not host_allowed(request.host, request.app[ALLOWED_HOSTS]):
        return refuse(request, 421, "bad_host", "the Host header does not name this machine")
    if request.method not in SAFE_METHODS and not origin_allowed(request):
        return refuse(request, 403, "bad_origin", "cross-site request refused")
    if level == "public":
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    sess = await request.app[QUERIES].users.session(token)
    if sess is None:
        return refuse(request, 401, "login_required", "log in first")
    request[SESSION], request[TOKEN], request[USER_NAME] = sess, token, sess.user.name
    if request.method not in SAFE_METHODS:
        sent = await csrf_token_of(request)
        if not sent or not hmac.compare_digest(sent.encode(), sess.csrf.encode()):
            return refuse(request, 403, "csrf", "missing or wrong CSRF token")
    if level not in ROLE_LEVELS.get(sess.user.role, frozenset()):
        return refuse(request, 403, "forbidden", REFUSALS.get(level, "not for this account"))
    return await handler(request)


def session_of(request: web.Request) -> WebSession:
    sess: WebSession = request[SESSION]
    return sess


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def set_session_cookie(request: web.Request, resp: web.StreamResponse, token: str) -> None:
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=_secure(request), path="/",
                    max_age=int(SESSION_TTL_S))


def _safe_next(nxt: str) -> str:
    """Only a same-site path: one leading slash, then printable ASCII without spaces or backslashes
    (browsers drop tabs and newlines, so `/\t/host` would become `//host`)."""
    ok = (nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt
          and all(33 <= ord(c) < 127 for c in nxt))
    return nxt if ok else "/"


@public
async def login_page(request: web.Request) -> web.Response:
    from edge.web.views import render

    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", {"login_csrf": token, "next": _safe_next(request.query.get("next", "/"))})
    resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=_secure(request), path="/login",
                    max_age=1800)
    return resp


@public
async def login_submit(request: web.Request) -> web.StreamResponse:
    from edge.web.views import render

    form = await request.post()
    sent, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
    nxt = _safe_next(str(form.get("next", "/")))
    if not sent or not hmac.compare_digest(sent.encode(), cookie.encode()):
        return refuse(request, 403, "csrf", "the login form expired; reload the page")
    try:
        user = await request.app[QUERIES].users.authenticate(str(form.get("name", "")),
                                                               str(form.get("password", "")))
    except AuthError as exc:
        msg = (f"Account locked after repeated failures. Try again in {human_duration(math.ceil(exc.retry_after_s))}."
               if exc.reason == "locked" else "Wrong name or password.")
        resp = render(request, "login.html", {"login_csrf": cookie, "next": nxt, "error": msg},
                      status=429 if exc.reason == "locked" else 401)
        return resp
    token, _ = await request.app[QUERIES].users.create_session(user)
    resp = redirect(nxt)
    set_session_cookie(request, resp, token)
    resp.del_cookie(LOGIN_COOKIE, path="/login")
    return resp


@session
async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[QUERIES].users.end_session(request[TOKEN], request[USER_NAME])
    resp: web.StreamResponse = (web.json_response({"ok": True}) if is_api(request) else redirect("/login"))
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


@public
async def api_login(request: web.Request) -> web.StreamResponse:
    """JSON login for scripts: {name, password} → {user, role, csrf} and the session cookie.

    Requires `Content-Type: application/json`, which a cross-site form cannot send without a CORS
    preflight (which this app never grants): that is the CSRF protection of this one route."""
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", "send application/json")
    try:
        body = await request.json()
        name, password = str(body["name"]), str(body["password"])
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
        return json_error(400, "bad_request", "expected {name, password}")
    try:
        user = await request.app[QUERIES].users.authenticate(name, password)
    except AuthError as exc:
        if exc.reason == "locked":
            return json_error(429, "locked", "account locked", retry_after_s=round(exc.retry_after_s, 1))
        return json_error(401, "bad_credentials", "wrong name or password")
    token, sess = await request.app[QUERIES].users.create_session(user)
    resp = web.json_response({"user": user.name, "role": user.role, "csrf": sess.csrf})
    set_session_cookie(request, resp, token)
    return resp

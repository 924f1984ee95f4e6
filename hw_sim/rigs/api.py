"""A small client for the daemon's HTTP API (docs/web-api.md): JSON login (session cookie + CSRF
token), the kiosk sale, the audit read model, the technician's restock and count, `/metrics`.

The session cookie is kept by hand (a cookie jar would refuse one set by an IP address, and the
daemon is addressed as 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

SALE_TIMEOUT_S = 120.0  # a sale waits for the vend (and its reconciliation after a board reset)


class ApiError(RuntimeError):
    """An error answer: `status` (HTTP), `error` (the JSON error code, e.g. sold_out) and `detail`."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


class SaleRefused(ApiError):
    """409 from the kiosk sale: the machine refused (`error` is SaleRefused.reason: sold_out, ...)."""


class ApiClient:
    """One logged-in user of the daemon at `base_url` (http://127.0.0.1:PORT)."""

    def __init__(self, base_url: str, *, metrics_token: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.metrics_token = metrics_token
        self.user = self.role = self.csrf = ""
        self._cookie = ""
        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                           timeout=aiohttp.ClientTimeout(total=SALE_TIMEOUT_S))

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    # ---- transport ---------------------------------------------------------------------------

    def _headers(self, post: bool) -> dict[str, str]:
        h = {"Cookie": self._cookie} if self._cookie else {}
        if post and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        return h

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        post = method != "GET"
        async with self._http.request(method, self.base_url + path, json=body if post else None,
                                      headers=self._headers(post)) as resp:
            text = await resp.text()
            try:
                doc = json.loads(text) if text else None
            except ValueError:
                doc = {"error": "not_json", "detail": text[:200]}
            if resp.status >= 400:
                err = doc if isinstance(doc, dict) else {}
                cls = SaleRefused if resp.status == 409 and path.startswith("/api/v1/kiosk/") else ApiError
                raise cls(resp.status, str(err.get("error", "http_error")), err.get("detail"))
            if path.endswith("/login"):
                self._cookie = "; ".join(f"{k}={m.value}" for k, m in resp.cookies.items())
            return doc

    async def get(self, path: str) -> Any:
        return await self._request("GET", path)

    async def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return await self._request("POST", path, dict(body or {}))

    # ---- session -----------------------------------------------------------------------------

    async def login(self, name: str, password: str) -> ApiClient:
        doc = await self.post("/api/v1/login", {"name": name, "password": password})
        self.user, self.role, self.csrf = doc["user"], doc["role"], doc["csrf"]
        return self

    # ---- the customer (kiosk) ----------------------------------------------------------------

    async def sell(self, slot: str, payment_ref: str = "") -> dict[str, Any]:
        """A customer's sale; the order dict (`status`: completed, failed, pending, ...). Raises
        SaleRefused when the machine refuses (`.error` = the reason)."""
        doc = await self.post("/api/v1/kiosk/sell", {"slot": slot, "payment_ref": payment_ref})
        result: dict[str, Any] = doc["result"]
        return result

    async def kiosk_slots(self) -> list[dict[str, Any]]:
        return list((await self.get("/api/v1/kiosk/slots"))["slots"])

    # ---- reads -------------------------------------------------------------------------------

    async def audit(self) -> dict[str, Any]:
        doc: dict[str, Any] = await self.get("/api/v1/audit")
        return doc

    async def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = await self.get("/api/v1/status")
        return doc

    async def metrics(self) -> dict[str, float]:
        """`/metrics` (Bearer metrics token) parsed: {'name{label="v",...}': value}."""
        headers = {"Authorization": f"Bearer {self.metrics_token}"}
        async with self._http.get(self.base_url + "/metrics", headers=headers) as resp:
            resp.raise_for_status()
            return parse_prometheus(await resp.text())

    # ---- the technician ----------------------------------------------------------------------

    async def restock(self, slot: str | None, count: int | None = None) -> dict[str, int]:
        """Fill `slot` (to `count`; None = capacity); `slot` None fills every slot. {slot: count}."""
        body: dict[str, Any] = {"slot_id": slot, "count": count}
        if slot is None:
            body["confirm"] = True
        return dict((await self.post("/api/v1/stock/restock", body))["result"])

    async def count(self, order_id: str, counted: int) -> Any:
        """Settle a needs_count vend by counting the slot (`counted` items in it now)."""
        return (await self.post(f"/api/v1/vends/{order_id}/count", {"counted": counted}))["result"]

    async def action(self, path: str, **body: Any) -> Any:
        """A confirmed technician action under /api/v1/devices (unlock, clear-lockout, tare, ...)."""
        return (await self.post(f"/api/v1/devices/{path}", {**body, "confirm": True})).get("result")


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of the text exposition format, keyed by the series as written (name plus labels)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            try:
                out[series] = float(value)
            except ValueError:
                continue
    return out


async def poll(check: Callable[[], Awaitable[bool]], timeout_s: float, *, every_s: float = 0.05,
               what: str = "condition") -> None:
    """Await `check()` until it is true; TimeoutError naming `what` after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():
                await asyncio.sleep(every_s)
    except TimeoutError:
        raise TimeoutError(f"{what} not reached in {timeout_s} s") from None

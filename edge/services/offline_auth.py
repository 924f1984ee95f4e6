"""Offline authorization: a cloud-signed QR token opens a take-and-go session without the network.

The scanner loop snapshots the scanner camera, decodes QR codes with OpenCV (`QRCodeDetectorAruco`,
then the classic `QRCodeDetector`; in its own one-thread executor), and hands each *new* code to `authorize()`: Ed25519 signature against the
keys in the config, scope / expiry / revocation (pure, `edge.core.offline_token`), then the nonce is
claimed in the ledger in the same transaction that records the authorization, and the take-and-go
session is opened with the token's limit, flagged offline. Every refusal is a ledger event
`offline_token_refused` with a stable reason; the door is never touched. Garbage never ends the loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.camera import Camera
from drivers.errors import DeviceError
from edge.clock import SystemClock
from edge.config import Config, OfflineAuthConfig
from edge.core.errors import ConfigError, SaleRefused
from edge.core.offline_token import (
    KID_RE,
    Revocations,
    TokenClaims,
    TokenRejected,
    Verifier,
    check,
    nonce_keep_until,
    parse,
)
from edge.ledger import repo, tokens
from edge.ledger.db import LedgerDB

if TYPE_CHECKING:
    from edge.services.machine import Machine

log = structlog.get_logger(__name__)
NONCE_GRACE_S = 86400.0  # nonces outlive their token by a day: a clock set back must not revive one
MAX_REVOKE_ITEMS = 10_000
DECODE_TIMEOUT_S = 3.0


def _verifier(key: Ed25519PublicKey) -> Verifier:
    def verify(message: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return verify


def verifiers_from_config(public_keys: Mapping[str, str]) -> dict[str, Verifier]:
    """key id → signature check; a bad entry is a ConfigError naming `offline_auth.public_keys.<kid>`."""
    out: dict[str, Verifier] = {}
    for kid, text in public_keys.items():
        key = f"offline_auth.public_keys.{kid}"
        if not KID_RE.match(kid):
            raise ConfigError(key, kid, "a key id of 1..32 characters A-Z a-z 0-9 _ . -")
        try:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
            out[kid] = _verifier(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(key, text, "base64 of a raw 32-byte Ed25519 public key") from exc
    return out


def qr_detectors() -> tuple[Any, ...]:
    """The QR decoders tried in order on each frame.

    The classic `cv2.QRCodeDetector` misses ~10-15 % of perfectly sharp codes: its finder-pattern
    search is confused by data modules that look like finder patterns, so whether a code is found
    depends on the token's bytes, and a missed code is missed on every frame. The ArUco-based
    detector locates finder patterns differently and reads those; the classic one stays as a
    second opinion."""
    return (cv2.QRCodeDetectorAruco(), cv2.QRCodeDetector())


def _decode_qr(detectors: Any, image: np.ndarray) -> str:
    """Blocking (executor): the text of the QR code in the image, "" when there is none.
    `detectors` is one OpenCV QR detector or a sequence of them (first non-empty read wins)."""
    for detector in detectors if isinstance(detectors, tuple | list) else (detectors,):
        try:
            text, _points, _straight = detector.detectAndDecode(image)
        except cv2.error:
            continue
        if text:
            return str(text)
    return ""


class OfflineAuth:
    """Verifies offline tokens and opens offline take-and-go sessions. `run()` is the scanner task."""

    def __init__(self, cfg: OfflineAuthConfig, machine_id: str, db: LedgerDB, takeandgo: Any, *,
                 clock: SystemClock | None = None) -> None:
        self.cfg, self.machine_id, self.db, self.takeandgo = cfg, machine_id, db, takeandgo
        self.clock = clock or SystemClock()
        self.verifiers = verifiers_from_config(cfg.public_keys)
        self.revoked = Revocations()
        self.counters = Counter[str]()
        self.last_result: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._seen: dict[str, float] = {}  # decoded text → last monotonic time it was in view

    # authorization -----------------------------------------------------------------------------
    async def authorize(self, token: str, *, source: str = "api") -> dict[str, Any]:
        """Check a token and open an offline session; returns {session_id, state, ...}.
        Raises TokenRejected (already recorded as an `offline_token_refused` event)."""
        async with self._lock:
            claims: TokenClaims | None = None
            try:
                claims = parse(token, self.verifiers, max_bytes=self.cfg.max_token_bytes)
                check(claims, self.machine_id, self.cfg.fleet, self.clock.wall(), self.revoked,
                      skew_s=self.cfg.clock_skew_s)
                await self._check_machine(claims)
                session_id = await self._claim_nonce(claims, source)
                row = await self._open(claims, session_id)
            except TokenRejected as exc:
                await self._refused(exc, claims, source)
                raise
        self.counters["accepted"] += 1
        self.last_result = {"accepted": True, "session_id": session_id, "customer": claims.customer_ref}
        return {**row, "customer_ref": claims.customer_ref, "limit": claims.limit, "currency": claims.currency}

    async def _check_machine(self, claims: TokenClaims) -> None:
        svc = self.takeandgo
        if not self.cfg.enabled or svc is None or not svc.enabled:
            reason = "offline_auth disabled" if not self.cfg.enabled else "take-and-go unavailable"
            raise TokenRejected("unavailable", getattr(svc, "disabled_reason", "") or reason)
        if svc.session is not None and not svc.session.final:
            raise TokenRejected("unavailable", "another session is running")
        planogram = await repo.current_planogram(self.db)
        currency = planogram.currency if planogram else ""
        if claims.currency != currency:
            raise TokenRejected("wrong_currency", f"token in {claims.currency}, machine sells in {currency}")

    async def _claim_nonce(self, claims: TokenClaims, source: str) -> str:
        """The nonce and the authorization event commit together: one token, one session."""
        now = self.clock.wall()
        session_id = f"offline-{claims.nonce}"
        async with self.db.tx() as tx:
            if not await tokens.claim_nonce(tx, claims.nonce, nonce_keep_until(claims, self.cfg.clock_skew_s),
                                            forget_before=now - NONCE_GRACE_S):
                raise TokenRejected("replayed", f"nonce {claims.nonce} already used")
            await tx.event("offline_token_accepted", {
                "session_id": session_id, "customer": claims.customer_ref, "limit": claims.limit,
                "currency": claims.currency, "kid": claims.kid, "scope": claims.scope,
                "nonce": claims.nonce, "expires_at": claims.expires_at, "source": source})
        return session_id

    async def _open(self, claims: TokenClaims, session_id: str) -> dict[str, Any]:
        try:
            row: dict[str, Any] = await self.takeandgo.open_session(
                session_id, claims.customer_ref, claims.limit, offline=True, actor="offline_token")
        except SaleRefused as exc:
            async with self.db.tx() as tx:  # nothing was unlocked: the customer may try again
                await tokens.release_nonce(tx, claims.nonce)
            raise TokenRejected("unavailable", f"{exc.reason}: {exc.detail}") from exc
        log.info("offline_session_opened", session_id=session_id, customer=claims.customer_ref,
                 limit=claims.limit, kid=claims.kid)
        return row

    async def _refused(self, exc: TokenRejected, claims: TokenClaims | None, source: str) -> None:
        self.counters[exc.reason] += 1
        self.last_result = {"accepted": False, "reason": exc.reason, "detail": exc.detail}
        data: dict[str, Any] = {"reason": exc.reason, "detail": exc.detail[:200], "source": source}
        if claims is not None:
            data.update(customer=claims.customer_ref, kid=claims.kid, nonce=claims.nonce)
        async with self.db.tx() as tx:
            await tx.event("offline_token_refused", data, severity="warning")
        log.warning("offline_token_refused", **data)

    # revocation --------------------------------------------------------------------------------
    async def load_revocations(self) -> Revocations:
        rows = await tokens.revocations(self.db)
        self.revoked = Revocations(customers=frozenset(v for k, v in rows if k == "customer"),
                                   kids=frozenset(v for k, v in rows if k == "kid"))
        return self.revoked

    async def revoke(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Cloud command `revoke` {customers: [ref…], kids: [key id…], reason?}: enforced from now on."""
        items = [("customer", v) for v in _strings(args, "customers")] + [("kid", v) for v in _strings(args, "kids")]
        if not items:
            raise ValueError("revoke needs customers and/or kids")
        reason = str(args.get("reason", ""))[:200]
        async with self.db.tx() as tx:
            await tokens.revoke(tx, items, reason)
            await tx.event("offline_tokens_revoked", {"customers": [v for k, v in items if k == "customer"][:50],
                                                      "kids": [v for k, v in items if k == "kid"][:50],
                                                      "count": len(items), "reason": reason})
        revoked = await self.load_revocations()
        log.info("offline_tokens_revoked", count=len(items), reason=reason)
        return {"revoked": len(items), "customers_total": len(revoked.customers), "kids_total": len(revoked.kids)}

    # scanner -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Supervised task `offline_auth.scanner`: scan, decode, authorize new codes, forever."""
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="offline-scanner")
        camera: Camera | None = None
        try:
            camera = Camera("scanner", self.cfg.scanner_source, timeout_s=2.0, max_age_s=1.0,
                            executor=executor, black_level=None)
            detector = qr_detectors()
            while True:
                await self.scan_once(camera, executor, detector)
                await asyncio.sleep(self.cfg.scan_interval_s)
        finally:
            if camera is not None:
                await camera.close()
            executor.shutdown(wait=True, cancel_futures=True)

    async def scan_once(self, camera: Camera, executor: concurrent.futures.Executor, detector: Any) -> str:
        """One look through the scanner; returns the decoded text ("" for none or an unreadable frame)."""
        try:
            frame = await camera.snapshot()
        except DeviceError:
            self.counters["camera_errors"] += 1  # the camera logs its own failure and recovery
            return ""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DECODE_TIMEOUT_S):
                text = await loop.run_in_executor(executor, _decode_qr, detector, frame.image)
        except TimeoutError:  # an overloaded machine: skip this frame, the code is read on a later one
            self.counters["decode_timeouts"] += 1
            log.warning("offline_scanner_decode_timeout", timeout_s=DECODE_TIMEOUT_S)
            return ""
        now, window = time.monotonic(), max(0.5, 5 * self.cfg.scan_interval_s)
        self._seen = {t: ts for t, ts in self._seen.items() if now - ts < window}
        if not text:
            return ""
        fresh = text not in self._seen  # a code held in view is handled once, not once per frame
        self._seen[text] = now
        if len(self._seen) > 64:
            self._seen.pop(next(iter(self._seen)))
        if fresh:
            self.counters["codes_read"] += 1
            try:
                await self.authorize(text, source="scanner")
            except TokenRejected:
                pass  # recorded as an event with its reason; the door stays locked
        return text

    def status(self) -> dict[str, Any]:
        """For the diagnostics page: counters by outcome and the last result."""
        return {"enabled": self.cfg.enabled, "keys": sorted(self.verifiers), "counters": dict(self.counters),
                "last_result": self.last_result, "revoked_customers": len(self.revoked.customers),
                "revoked_kids": len(self.revoked.kids)}


def _strings(args: Mapping[str, Any], key: str) -> list[str]:
    value = args.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_REVOKE_ITEMS or not all(
            isinstance(v, str) and 1 <= len(v) <= 128 for v in value):
        raise ValueError(f"{key} must be a list of at most {MAX_REVOKE_ITEMS} strings of 1..128 characters")
    return list(dict.fromkeys(value))


async def start_offline_auth(config: Config, db: LedgerDB, machine: Machine, supervisor: Any,
                             inbox: Any) -> OfflineAuth:
    """Wire offline authorization: revocation list from the ledger, the `revoke` cloud command, and
    (when enabled with a scanner) the supervised scanner task. Registers itself in machine.services."""
    cfg = config.offline_auth
    takeandgo = machine.services.takeandgo
    if cfg.enabled and not config.takeandgo.enabled:
        raise ConfigError("offline_auth.enabled", True, "false unless takeandgo.enabled = true")
    if cfg.enabled and not cfg.public_keys:
        raise ConfigError("offline_auth.public_keys", {}, "at least one key when offline_auth.enabled = true")
    auth = OfflineAuth(cfg, config.machine.id, db, takeandgo, clock=takeandgo.clock if takeandgo else None)
    await auth.load_revocations()
    if inbox is not None:
        inbox.register("revoke", auth.revoke)
    machine.services.offline_auth = auth
    if cfg.enabled and cfg.scanner_source:
        supervisor.spawn("offline_auth.scanner", auth.run)
    log.info("offline_auth_ready", enabled=cfg.enabled, keys=sorted(auth.verifiers),
             revoked=len(auth.revoked.customers) + len(auth.revoked.kids), scanner=bool(cfg.scanner_source))
    return auth

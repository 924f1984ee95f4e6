"""Take-and-go: authorize → before → unlock → open → close → lock → settle → after → decide → order.

The pure state machine (`edge.core.session`) says what to do next; this service does it, persists
the session at every step (a restart resumes from the ledger with the stored *before* evidence) and
turns the fusion decision into an order. Never charges for something not taken: in doubt → review.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

import structlog

from drivers.errors import DeviceError
from edge.clock import SystemClock
from edge.config import TakeAndGoConfig
from edge.core.catalog import Money, Planogram
from edge.core.errors import SaleRefused
from edge.core.fusion import Decision, ShelfObservation, decide
from edge.core.session import Effect, Event, Session, Timeouts, step
from edge.crashpoints import crash_point
from edge.ledger import repo, sessions
from edge.ledger.db import LedgerDB
from edge.services.evidence import Capturer, EvidenceStore, ShelfView, cells_from_json, cells_to_json
from edge.services.lookalike_shelves import camera_skus
from edge.services.pricing import PriceBook
from edge.services.takeandgo_lanes import lane_drops, mixed_lanes, no_prototype_lanes, shelf_lanes

log = structlog.get_logger(__name__)


class TakeAndGoService:
    """One session at a time. Door and shelf events arrive on a queue; `run()` is the only actor."""

    def __init__(self, db: LedgerDB, door: Any, shelves: Any, capturer: Capturer, evidence: EvidenceStore,
                 cfg: TakeAndGoConfig, *, open_too_long_s: float, clock: SystemClock | None = None,
                 disabled_reason: str = "") -> None:
        self.db, self.door, self.shelves, self.capturer, self.evidence = db, door, shelves, capturer, evidence
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.timeouts = Timeouts(never_opened_s=cfg.never_opened_s, open_too_long_s=open_too_long_s,
                                 settle_s=cfg.settle_s)
        self.disabled_reason = disabled_reason
        self.prices: PriceBook | None = None  # offline price rules and meal deals (edge/services/pricing.py)
        self.session: Session | None = None
        self.data: dict[str, Any] = {}
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.last_latency_ms: float | None = None
        self.last_timings: dict[str, float] = {}  # door close -> order, by step (see _decide)
        self._closed_at: float | None = None  # perf_counter at the after capture; in memory only (not journaled)
        # the before capture's {shelf: (image, view)}, in memory only: the after capture reads again only
        # the cells that changed (after a restart in between, it reads them all)
        self._before_frames: dict[int, tuple[Any, ShelfView]] = {}
        self.counters = Counter[str]()
        self.executor: Any = None  # owned inference pool (evidence has its own); shut down by close()
        self.enrollment: Any = None  # edge.services.enrollment.EnrollmentService when a model is loaded
        # held while events are processed and while a session is opened: a new session never
        # replaces the one whose last effects (persist, log) are still being carried out
        self._turn = asyncio.Lock()
        self._writing: set[asyncio.Task[None]] = set()  # evidence being written
        door.on_opened(lambda _e: self.events.put_nowait(Event("door_opened")))
        door.on_closed(lambda _e: self.events.put_nowait(Event("door_closed")))

    @property
    def enabled(self) -> bool:
        return not self.disabled_reason

    async def open_session(self, session_id: str, customer_ref: str, limit_amount: int | None,
                           *, offline: bool = False, actor: str = "cloud") -> dict[str, Any]:
        """Authorize a session (cloud command, offline token or technician test). Returns its row."""
        if not self.enabled:
            raise SaleRefused("takeandgo_disabled", self.disabled_reason)
        if self.door.refusing:  # the daemon is stopping: the door stays locked, no new session
            raise SaleRefused("stopping", "the machine is shutting down")
        if self.session is not None and not self.session.final:  # answered at once, not after the turn
            raise SaleRefused("session_active", self.session.session_id)
        async with self._turn:
            return await self._open(session_id, customer_ref, limit_amount, offline=offline, actor=actor)

    async def _open(self, session_id: str, customer_ref: str, limit_amount: int | None,
                    *, offline: bool, actor: str) -> dict[str, Any]:
        if self.session is not None and not self.session.final:
            raise SaleRefused("session_active", self.session.session_id)
        if await sessions.exists(self.db, session_id):
            raise SaleRefused("duplicate_session", session_id)
        planogram = await repo.current_planogram(self.db)
        if planogram is None or not planogram.shelves():
            raise SaleRefused("no_shelves", "the planogram has no take-and-go lanes")
        s = Session(session_id, customer_ref, limit_amount, planogram.currency, offline=offline,
                    entered_at=self.clock.monotonic(), timeouts=self.timeouts)
        # what the cameras may name: the products the fridge's lanes stock (both captures use the same set)
        stocked = sorted(set().union(*camera_skus(planogram).values()))
        self.session, self.data = s, {"actor": actor, "shelves": planogram.shelves(), "candidates": stocked}
        await self._persist(event="session_authorized")
        await self.events.put(Event("start"))
        log.info("session_authorized", session_id=session_id, customer=customer_ref, limit=limit_amount,
                 offline=offline)
        return {"session_id": session_id, "state": s.state}

    async def run(self) -> None:
        """Consume events and tick the timers (supervised task `takeandgo`)."""
        await self.recover()
        while True:
            try:
                async with asyncio.timeout(0.5):
                    ev = await self.events.get()
            except TimeoutError:
                ev = Event("tick")
            await self.feed(ev)

    async def feed(self, ev: Event) -> None:
        async with self._turn:
            await self._feed(ev)

    async def _feed(self, ev: Event) -> None:
        todo = [ev]
        while todo and self.session is not None:
            s, effects = step(self.session, todo.pop(0), self.clock.monotonic())
            changed = s.state != self.session.state
            self.session = s
            if changed:
                await self._persist()
            for eff in effects:
                nxt = await self._do(eff)
                if nxt is not None:
                    todo.append(nxt)

    async def _do(self, eff: Effect) -> Event | None:
        try:
            handler = {"capture_before": self._capture_before, "unlock": self._unlock, "lock": self._lock,
                       "alarm": self._alarm, "settle_and_capture_after": self._after, "decide": self._decide,
                       "finish": self._finish}[eff.kind]
            return await handler(eff)
        except (DeviceError, TimeoutError, OSError) as exc:
            log.error("session_effect_failed", effect=eff.kind, error=str(exc))
            return Event("failed", f"{eff.kind}: {exc}")

    async def _capture_before(self, _eff: Effect) -> Event:
        shelves = self.data["shelves"]
        # readings taken after the authorization only: a restock or a bump a moment ago must not leak
        # a stale "stable" value into the before weight (the scale settles while the cameras shoot)
        grams, (views, images) = await asyncio.gather(self.shelves.wait_stable(self.cfg.settle_s, fresh=True),
                                                      self.capturer.capture(shelves, self._candidates()))
        assert self.session is not None
        self.data["pure"] = sorted(await repo.pure_lanes(self.db))  # journaled: a resumed session decides alike
        await self._camera_alarms(views)
        # the pictures are evidence for a reviewer, not input to the decision (the cells are): written
        # behind, so a slow or full card never holds the door or the order
        self._write_behind(self._keep_images(self.session.session_id, "before", images))
        self._before_frames = {k: (images[k], views[k]) for k in images}
        self.data["before"] = {str(k): cells_to_json(v) for k, v in views.items()}
        self.data["before_g"] = {str(k): grams.get(k) for k in shelves}
        self._note_missing()
        return Event("before_captured")

    async def _unlock(self, _eff: Effect) -> Event:
        assert self.session is not None
        self.session = replace(self.session, state="unlocking")
        await self._persist(event="session_unlocking")  # journaled before the command leaves
        await self.door.unlock(None, f"session {self.session.session_id}", actor=self.data.get("actor", ""))
        crash_point("session.after_unlock")
        return Event("unlocked")

    async def _lock(self, _eff: Effect) -> None:
        await self.door.lock()

    async def _alarm(self, eff: Effect) -> None:
        assert self.session is not None
        async with self.db.tx() as tx:
            await repo.raise_alarm(tx, f"{eff.detail}:{self.session.session_id}", eff.detail,
                                   f"session {self.session.session_id}: {eff.detail}",
                                   data={"session_id": self.session.session_id})

    async def _after(self, _eff: Effect) -> Event:
        self._closed_at = closed = time.perf_counter()
        # the cameras need no settling: capture while the scales settle (a window of quiet samples)
        earlier, self._before_frames = self._before_frames, {}
        grams, (views, images) = await asyncio.gather(self.shelves.wait_stable(self.cfg.settle_s, fresh=False),
                                                      self.capturer.capture(self.data["shelves"], self._candidates(),
                                                                            earlier))
        assert self.session is not None
        self.data["after_capture_ms"] = round((time.perf_counter() - closed) * 1000, 1)
        await self._camera_alarms(views)
        self.data["after"] = {str(k): cells_to_json(v) for k, v in views.items()}
        self.data["after_g"] = {str(k): grams.get(k) for k in self.data["shelves"]}
        self._after_images = images
        self._note_missing()
        return Event("after_ready")

    def _candidates(self) -> list[str] | None:
        """The session's stocked products (None for a session journaled before they were recorded)."""
        got = self.data.get("candidates")
        return list(got) if isinstance(got, list) else None

    def _note_missing(self) -> None:
        """The SKUs the gallery could not name at either capture (their lanes are decided by weight)."""
        missing = set(self.enrollment.missing) if self.enrollment is not None else set()
        self.data["no_prototype"] = sorted(missing | set(self.data.get("no_prototype", ())))

    async def _camera_alarms(self, views: Mapping[int, ShelfView]) -> None:
        """A shelf camera that fails is an alarm (raised once, cleared when it sees again): sessions
        on that shelf fall back to weight only and go to review when the weight is ambiguous."""
        async with self.db.tx() as tx:
            for shelf, view in views.items():
                key = f"device_offline:camera.shelf{shelf}"
                if view.cells is None and view.error and view.error != "no model":
                    await repo.raise_alarm(tx, key, "device_offline", f"shelf {shelf} camera: {view.error}",
                                           data={"device": f"camera.shelf{shelf}", "error": view.error[:200]})
                elif view.cells is not None:
                    await repo.clear_alarm(tx, key, "camera sees again")

    def observations(self, planogram: Planogram) -> list[ShelfObservation]:
        obs = []
        blind = no_prototype_lanes(self.data, planogram)
        pure = frozenset(self.data.get("pure", ()))
        for k in self.data["shelves"]:
            b, a = cells_from_json(self.data["before"][str(k)]), cells_from_json(self.data["after"][str(k)])
            bg, ag = self.data["before_g"].get(str(k)), self.data["after_g"].get(str(k))
            delta = None if (bg is None or ag is None or not self.cfg.fusion) else ag - bg
            lanes = frozenset(s.slot_id for s in planogram.slots_on_shelf(k) if s.slot_id in blind)
            obs.append(ShelfObservation(k, b.cells, a.cells, delta, no_prototype=lanes, pure=pure))
        return obs

    async def _decide(self, _eff: Effect) -> Event:
        assert self.session is not None
        planogram = await repo.current_planogram(self.db)
        assert planogram is not None
        s = self.session
        limit = Money(s.limit_amount, s.currency) if s.limit_amount is not None else None
        t0 = time.perf_counter()
        decision = decide(self.observations(planogram), planogram, limit=limit)
        t1 = time.perf_counter()
        crash_point("session.before_order")
        await self._order(decision, planogram)
        closed, self._closed_at = self._closed_at, None
        if closed is not None:  # None after a restart between the capture and here
            now = time.perf_counter()
            self.last_latency_ms = (now - closed) * 1000
            self.last_timings = {"after_capture_ms": float(self.data.get("after_capture_ms", 0.0)),
                                 "decide_ms": round((t1 - t0) * 1000, 1), "order_ms": round((now - t1) * 1000, 1),
                                 "total_ms": round(self.last_latency_ms, 1)}
        self.data["decision"] = {"status": decision.status, "taken": decision.taken, "moves": decision.moves,
                                 "confidence": decision.confidence, "reasons": decision.reasons}
        summary = {"session_id": s.session_id, "decision": self.data["decision"],
                   "before_g": self.data.get("before_g"), "after_g": self.data.get("after_g"),
                   "shelves": {str(k): v for k, v in decision.evidence.items()}}
        self._write_behind(self._keep_evidence(s.session_id, summary, getattr(self, "_after_images", {})))
        return Event("decided", decision.status)

    async def _order(self, d: Decision, planogram: Planogram) -> None:
        """One transaction: the order (charged or for review), stock per lane, moved items."""
        assert self.session is not None
        s = self.session
        lanes = lane_drops(self.data, d.taken, planogram)
        async with self.db.tx() as tx:
            if d.status != "nothing_taken":
                status = "completed" if d.status == "charge" else "needs_review"
                lines: list[Mapping[str, Any]] = [
                    {"sku_id": sku, "slot_id": slot, "qty": n, "unit_price": planogram.skus[sku].price.amount}
                    for (slot, sku), n in sorted(lanes.items())]
                total = d.total.amount if d.total else 0
                if self.prices is not None and status == "completed":  # rules only lower a price
                    lines = await self.prices.price_lines(tx, lines)
                    total = sum(int(ln["qty"]) * int(ln["unit_price"]) for ln in lines)
                await repo.insert_order(tx, s.session_id, kind="takeandgo", status="pending", total=total,
                                        currency=s.currency, payment_ref=s.customer_ref, session_id=s.session_id,
                                        offline=s.offline, lines=lines)
                if status == "completed":
                    for (slot, _sku), n in lanes.items():
                        await repo.change_stock(tx, slot, -n, "takeandgo", order_id=s.session_id)
                await repo.finish_order(tx, s.session_id, status, reason=";".join(d.reasons)[:500])
            for sku, src, dst in d.moves:
                await repo.change_stock(tx, src, -1, "misplaced_move", sku_id_moved=sku, to=dst)
                await repo.change_stock(tx, dst, +1, "misplaced_move", sku_id_moved=sku, frm=src)
            await repo.set_mixed(tx, mixed_lanes(self.data, d.moves, d.status == "needs_review", planogram), True)
            await tx.event("session_decided", {"session_id": s.session_id, "status": d.status,
                                               "taken": d.taken, "confidence": round(d.confidence, 3)})
        self.counters[d.status] += 1

    def _write_behind(self, write: Coroutine[Any, Any, None]) -> None:
        """Run an evidence write as its own task, on the evidence pool (never the inference pool)."""
        task = asyncio.get_running_loop().create_task(write)
        self._writing.add(task)  # a reference, so the task is not collected; close() waits for it
        task.add_done_callback(self._writing.discard)

    async def _keep_images(self, sid: str, tag: str, images: Mapping[int, Any]) -> None:
        try:
            await self.evidence.save_images(sid, tag, dict(images))
        except OSError as exc:
            log.error("evidence_not_saved", session_id=sid, error=str(exc))

    async def _keep_evidence(self, sid: str, summary: dict[str, Any], images: Mapping[int, Any]) -> None:
        """Off the critical path; takes everything it writes as arguments (by the time it runs,
        the next customer's session may already be open). A full or failing disk costs the
        evidence, logged, never the order (already committed)."""
        try:
            await self.evidence.save_images(sid, "after", dict(images))
            await self.evidence.save_summary(sid, summary)
        except OSError as exc:
            log.error("evidence_not_saved", session_id=sid, error=str(exc))

    async def _finish(self, eff: Effect) -> None:
        s = self.session
        assert s is not None
        await self._persist(event="session_finished", detail={"state": eff.detail})
        log.info("session_finished", session_id=s.session_id, state=s.state, outcome=s.outcome)

    async def _persist(self, *, event: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        s = self.session
        assert s is not None
        doc = json.dumps({**self.data, "outcome": s.outcome, "opened": s.opened_at is not None}, default=str)
        # failed with the door open (review, no decision): anything may have gone anywhere, nothing says
        # what; with the state that says so, no lane is vouched for any more
        spoilt = s.state == "needs_review" and "decision" not in self.data
        planogram = await repo.current_planogram(self.db) if spoilt else None
        async with self.db.tx() as tx:
            await sessions.save(tx, s.session_id, s.state, s.customer_ref, s.limit_amount, s.currency, s.offline,
                                doc)
            if planogram is not None:
                await repo.set_mixed(tx, shelf_lanes(planogram), True)
            if event:
                await tx.event(event, {"session_id": s.session_id, "state": s.state, **(detail or {})})

    async def recover(self) -> None:
        """Resume an unfinished session after a restart from what the ledger holds — never re-unlock."""
        row = await sessions.latest_unfinished(self.db)
        if row is None:
            return
        data = json.loads(row["data"])
        s = Session(row["session_id"], row["customer_ref"], row["limit_amount"], row["currency"],
                    offline=bool(row["offline"]), state=row["state"], entered_at=self.clock.monotonic(),
                    timeouts=self.timeouts)
        self.session, self.data = s, {k: v for k, v in data.items() if k not in ("outcome", "opened")}
        log.warning("session_recovering", session_id=s.session_id, state=s.state)
        if s.state == "authorized" or "before" not in self.data:  # the door was never unlocked
            await self.feed(Event("failed", "restart_before_unlock"))
            return
        # the door may have been opened while we were down: lock it and judge the shelves as they are now
        self.session = replace(s, state="open", opened_at=self.clock.monotonic())
        await self.feed(Event("door_closed"))

    async def review_queue(self, limit: int = 50) -> list[dict[str, Any]]:
        """Sessions a human must decide, newest first, with the evidence images' page URLs."""
        rows = await sessions.needing_review(self.db, limit)
        out = []
        for r in rows:
            data = json.loads(r["data"])
            decision = data.get("decision") or {}
            out.append({"session_id": r["session_id"], "customer_ref": r["customer_ref"], "at": r["updated_at"],
                        "reason": "; ".join(decision.get("reasons") or []) or data.get("outcome", ""),
                        "guess": decision.get("taken") or {},
                        "evidence": [f"/evidence/{r['session_id']}/{n}" for n in self.evidence.files(r["session_id"])]})
        return out

    async def close(self) -> None:
        if self._writing:  # let the last evidence reach the disk, within reason
            _done, pending = await asyncio.wait(set(self._writing), timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for cam in self.capturer.cameras.values():
            await cam.close()
        for pool in (self.executor, self.evidence.executor):  # inference, then evidence writes
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        s = self.session
        return {"enabled": self.enabled, "disabled_reason": self.disabled_reason,
                "session": None if s is None else {"session_id": s.session_id, "state": s.state,
                                                   "outcome": s.outcome},
                "counters": dict(self.counters), "last_latency_ms": self.last_latency_ms,
                "last_timings": dict(self.last_timings), "cells": dict(self.capturer.cells)}

"""GET /api/v1/audit and the in-memory counters of /api/v1/status and /metrics (issue 15: what the
out-of-process demo checks a run against), over real HTTP against the real daemon, the simulated
vend board (and, for the counters, the simulated Modbus plant) and a real SQLite ledger.

Every audit number is compared with what the ledger's own reads say and with what the simulator did."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.config import Secrets, WebConfig
from edge.core.errors import SaleRefused
from edge.ledger import journal, payments, repo, reports
from edge.services.accounts import Accounts
from edge.web.app import bound_port, start_web
from tests.e2e.test_metrics_promtool import PROMTOOL
from tests.e2e.test_web_security import PASSWORD, web  # noqa: F401  (the shared fixture)
from tests.support.rigs.fridge import start_fridge_rig
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(90)


async def _audit(w) -> dict:
    s, _ = await w.login("view")
    async with s:
        r = await s.get("/api/v1/audit")
        assert r.status == 200
        return await r.json()


async def _needs_count(w, slot: str) -> str:
    machine = w.rig.daemon.machine
    w.rig.sim.brownout("mid_motor")  # the board resets while the motor turns: nobody knows if it fell
    order = await machine.sell(slot, "card:audit")
    await wait_for(lambda: not machine.vend.unreconciled, 15, what="the reconciler")
    return order["order_id"]


async def test_audit_counts_agree_with_the_ledger_and_the_simulator(web):  # noqa: F811
    w, machine, db, sim = web, web.rig.daemon.machine, web.rig.daemon.db, web.rig.sim
    for slot in ("A1", "A1", "B3"):
        assert (await machine.sell(slot, "card:a"))["status"] == "completed"
    await machine.test_vend("A2", actor="tech")
    sim.jam("C1")
    assert (await machine.sell("C1", "card:jam"))["status"] == "failed"  # paid, nothing fell: refund due
    await machine.restock("C3", 0, actor="test")
    sim.stock["C3"] = 0  # the technician emptied the spiral too
    with pytest.raises(SaleRefused):
        await machine.sell("C3", "card:none")  # refused before any order exists
    open_id = await _needs_count(w, "B2")
    settled_id = await _needs_count(w, "B4")
    await machine.settle_count(settled_id, sim.stock["B4"], "tech")  # the count says it did not fall

    a = await _audit(w)
    lines = await reports.orders(db, "", "~")
    sales = [o for o in lines if o["kind"] in ("vend", "test_vend")]
    assert a["orders"]["by_status"] == dict(Counter(o["status"] for o in sales))
    assert a["orders"]["by_status"] == {"completed": 4, "failed": 2, "needs_count": 1}
    assert a["orders"]["completed_by_slot"] == {s: n for s, n in sim.dispensed.items() if n}
    assert a["orders"]["completed_by_slot"] == {"A1": 2, "A2": 1, "B3": 1}
    assert a["orders"]["refunds_due"] == sum(o["refund_due"] for o in sales) == 2
    assert a["vends"]["needs_count"] == [{"order_id": open_id, "slot_id": "B2"}]
    assert [e.order_id for e in await journal.needs_count(db)] == [open_id]
    assert a["vends"]["unreconciled"] == await journal.count_open(db) == 0
    assert (a["vends"]["counted"], a["vends"]["counted_fell"]) == (1, 0)
    assert a["stock"] == {slot: row.count for slot, row in (await repo.stock(db)).items()}
    assert {s: (a["stock"][s], n) for s, n in sim.stock.items() if a["stock"][s] != n} == {}  # ledger = spirals
    assert a["alarms"]["active"] == [x["alarm_key"] for x in await repo.active_alarms(db)]
    assert a["alarms"]["raised"] == a["events"].get("alarm_raised", 0)
    assert a["events"]["vend_requested"] == 7  # seven vends; the refused sale wrote nothing
    assert a["lockouts"] == {"food_safety": 0, "food_safety_open": 0}
    assert a["payments"] == {} and a["integrity_ok"] is True and a["telemetry_minutes"] == 0


async def test_audit_payments_per_method_as_the_ledger_books_them(web):  # noqa: F811
    db = web.rig.daemon.db
    async with db.tx() as tx:
        for pid, state, amount in (("p1", "captured", 180), ("p2", "captured", 150), ("p3", "refunded", 90),
                                   ("p4", "denied", 120), ("p5", "voided", 120), ("p6", "requested", 200)):
            await payments.open_payment(tx, pid, method="mdb", slot_id="A1", item=1, amount=amount,
                                        currency="EUR", scaled=amount)
            if state != "requested":
                await payments.set_payment_state(tx, pid, state)
    got = (await _audit(web))["payments"]
    assert got == {"mdb": {"captured": 2, "captured_amount": 330, "refunded": 1, "refunded_amount": 90,
                           "denied": 1, "cancelled": 0, "voided": 1, "open": 1, "disagreements": 2}}
    broken = await payments.disagreements(db, "mdb")  # two captures without a completed order: a breach
    assert broken["captured_without_drop"] == ["p1", "p2"]


async def test_viewer_reads_the_audit_a_kiosk_may_not(web):  # noqa: F811
    await Accounts(web.rig.daemon.machine.db).add("screen", "kiosk", PASSWORD)
    s, _ = await web.login("screen")
    async with s:
        assert (await s.get("/api/v1/audit")).status == 403
    async with web.client() as anon:
        assert (await anon.get("/api/v1/audit")).status == 401


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples}


async def test_in_memory_counters_have_stable_names_in_status_and_metrics(tmp_path):
    rig = await start_fridge_rig(str(tmp_path), speed=2000, poll_s=0.02)
    machine, plant = rig.daemon.machine, rig.plant
    door, temp = plant.door, plant.temperature
    assert door is not None and temp is not None
    await Accounts(machine.db).add("view", "viewer", PASSWORD)
    runner = await start_web(machine, WebConfig(host="127.0.0.1", port=0), Secrets(metrics_token="tok"))
    base = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        await wait_for(lambda: all(d.online for d in plant.devices.values()) and temp.duty_cycle() is not None,
                       10, what="the plant online with temperature history")
        await door.unlock(600, "test", actor="test")
        await wait_for(lambda: door.counters["unlocks"] == 1, 5, what="the unlock counted")
        async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            assert (await s.post("/api/v1/login", json={"name": "view", "password": PASSWORD})).status == 200
            status = await (await s.get("/api/v1/status")).json()
            text = await (await s.get("/metrics", headers={"Authorization": "Bearer tok"})).text()
    finally:
        await runner.cleanup()
        await rig.stop()
    m, c = _samples(text), status["counters"]
    assert c["door"] == {"unlocks": 1, "openings": 0, "unlock_failures": 0}
    assert {"sales_refused_food_safety", "lockouts", "defrosts"} <= set(c["temperature"])
    assert {(svc, k) for svc, cs in c.items() for k in cs} == {
        (dict(labels)["service"], dict(labels)["counter"]) for name, labels in m if name == "vendedge_service_events_total"}
    for svc, k in (("door", "unlocks"), ("door", "openings"), ("temperature", "sales_refused_food_safety")):
        assert m[("vendedge_service_events_total", (("counter", k), ("service", svc)))] == c[svc][k], (svc, k)
    assert 0.0 <= m[("vendedge_compressor_duty_ratio", ())] <= 1.0
    assert status["temperature"]["duty_cycle_1h"] is not None and status["temperature"]["max_cabinet_c"] is not None
    assert ("vendedge_temperature_max_celsius", (("probe", "cabinet"),)) in m
    if os.path.exists(PROMTOOL):  # the new families pass Prometheus' own lint (test_metrics_promtool: no plant)
        proc = await asyncio.create_subprocess_exec(PROMTOOL, "check", "metrics", stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(text.encode()), 30)
        assert proc.returncode == 0 and out.strip() == b"", out.decode()
    polls_ok = {labels: v for (name, labels), v in m.items() if name == "vendedge_device_events_total"
                and dict(labels)["counter"] == "ok" and dict(labels)["device"].startswith("plant.")}
    assert len(polls_ok) == len(plant.devices) and all(v > 0 for v in polls_ok.values())

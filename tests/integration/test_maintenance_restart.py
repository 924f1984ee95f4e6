"""Predictive-maintenance state survives a restart (edge/ledger/maintenance.py): the slot trends and
the cooling baselines are written to a real SQLite ledger and read back by fresh services on the
same file, so a restart neither relearns a baseline nor raises an alarm twice."""

from __future__ import annotations

import pathlib

import pytest

from drivers.vend_board import MotorCurrent, VendOutcome, VendResult
from edge.core.maintenance import CoolingWatch
from edge.ledger import maintenance as rows
from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.services.maintenance import SlotTrends

pytestmark = pytest.mark.timeout(30)


def vend(seq: int, ms: int, mean_ma: int | None) -> VendResult:
    current = None if mean_ma is None else MotorCurrent(mean_ma, mean_ma + 100)
    return VendResult(seq, "A1", VendOutcome.OK, ms, 1, current)


async def feed(trends: SlotTrends, values: list[tuple[int, int | None]], first_seq: int = 1) -> None:
    for i, (ms, ma) in enumerate(values):
        trends.on_vend("A1", vend(first_seq + i, ms, ma))
    await trends.drain()


async def service_soon(db: LedgerDB) -> list[str]:
    return [a["alarm_key"] for a in await repo.active_alarms(db) if a["kind"] == "service_soon"]


async def test_slot_baselines_and_alarm_survive_a_restart(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    db = await LedgerDB.open(path)
    try:
        await feed(SlotTrends(db), [(1200, 260)] * 20)  # learnt: 1200 ms, 260 mA
    finally:
        await db.close()

    db = await LedgerDB.open(path)  # a restart: a new process, the same ledger
    try:
        trends = SlotTrends(db)
        await feed(trends, [(1200, 420)] * 6, first_seq=21)  # no relearning: judged at once
        watch = trends.watches["A1"]
        assert watch.run_time.baseline == 1200 and watch.current.baseline == 260
        assert watch.current.tripped and await service_soon(db) == ["service_soon:slot:A1"]
    finally:
        await db.close()

    db = await LedgerDB.open(path)  # and again: the alarm is known, not raised twice
    try:
        trends = SlotTrends(db)
        await feed(trends, [(1200, 420)] * 3, first_seq=27)
        assert trends.watches["A1"].active
        raised = await db.fetchall("SELECT 1 FROM events WHERE kind='alarm_raised'")
        assert len(raised) == 1
        await trends.serviced("A1", "tech-anna")
        assert await service_soon(db) == []
        state = (await rows.load_trend_states(db, "slot"))["A1"]
        assert state["run_time"]["baseline"] is None and not state["active"]  # relearnt after a service
    finally:
        await db.close()


async def test_a_bad_stored_state_is_learnt_afresh(tmp_path: pathlib.Path) -> None:
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"))
    try:
        async with db.tx() as tx:
            await rows.save_trend_state(tx, "slot", "A1", {"run_time": {"baseline": "x"}, "current": 7})
        trends = SlotTrends(db)
        await feed(trends, [(1200, 260)] * 5)
        watch = trends.watches["A1"]
        assert watch.run_time.baseline is None and len(watch.run_time.learn) == 5
    finally:
        await db.close()


def test_cooling_state_keeps_baselines_not_times() -> None:
    w = CoolingWatch()
    t = 0.0
    while t < 30 * 3600:  # a day of 10-min runs every 40 min: baseline learnt
        for on, length in ((True, 600.0), (False, 1800.0)):
            end = t + length
            while t < end:
                t += 10.0
                w.observe(t, on)
    state = w.state()
    assert state == {"baselines": {"normal": 600.0}, "active": False}
    fresh = CoolingWatch()
    fresh.restore(state)
    assert fresh.regimes["normal"].baseline_s == 600.0 and fresh.started is None
    fresh.restore({"baselines": {"normal": -1}})  # nonsense is ignored
    assert fresh.regimes["normal"].baseline_s == 600.0

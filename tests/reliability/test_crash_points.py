"""Power cut at every named crash point: the real daemon dies there (os._exit), restarts without it,
and the machine is whole again — nothing lost, nothing done twice, door locked, ledger intact.

Adding a crash point is one line in CASES: the point, the workload that reaches it, and what the
customer's order must look like after the restart. A point in edge.crashpoints.POINTS that no module
calls yet is skipped as "not reached yet"; once a module calls it, its case runs (or fails loudly if
it has no workload).
"""

from __future__ import annotations

import pathlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge.crashpoints import EXIT_CODE, POINTS
from edge.ledger.migrations import MIGRATIONS
from tests.reliability.harness import Rig, called_points, check_invariants, make_rig, reached_points

pytestmark = pytest.mark.timeout(90)
SLOT = "A1"


def _die_in_sale(rig: Rig, spec: str) -> int:
    """Fill A1, arm the point, sell: the process must die inside the sale."""
    d = rig.start_daemon()
    assert rig.restock(SLOT) == {SLOT: 8}
    assert "seq" in (d.ask("quiet") or {})  # start-up transactions done: the N-th one is the sale's
    assert d.ask(f"arm {spec}") == {"armed": spec}
    assert d.ask(f"sell {SLOT}") is None, "the sale finished: the crash point was not reached"
    return d.wait()


def _kill_on_frame(rig: Rig, spec: str) -> int:
    """External SIGKILL the instant the board has the VEND frame (the window `vend.after_send` names)."""
    d = rig.start_daemon()
    assert rig.restock(SLOT) == {SLOT: 8}
    d.send(f"sell {SLOT}")
    deadline = time.monotonic() + 10
    while rig.board.call(lambda: rig.sim.vend_frames_received) == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    d.kill()
    return d.wait()


def _die_acking(rig: Rig, spec: str) -> int:
    """Sell with sync on; the push of the sale's records is stored by the cloud, then the ack dies."""
    d = rig.start_daemon()
    assert rig.restock(SLOT) == {SLOT: 8}
    assert d.ask("wait_synced") == {"backlog": 0}
    assert d.ask(f"arm {spec}") == {"armed": spec}
    assert (d.ask(f"sell {SLOT}") or {}).get("status") == "completed"
    return d.wait()


def _die_applying_config(rig: Rig, spec: str) -> int:
    """The cloud holds a new planogram version (cola price 180 → 195); applying it at start dies."""
    assert rig.cloud is not None
    doc = rig.planogram_doc()
    assert rig.cloud.admin("PUT", "/admin/machines/demo-0001/config", doc)[0] == 200  # v1 == the seed
    doc["skus"] = [dict(s, price=195) if s["sku_id"] == "cola" else s for s in doc["skus"]]
    assert rig.cloud.admin("PUT", "/admin/machines/demo-0001/config", doc)[1] == {"version": 2}
    d = rig.start_daemon(spec, wait_ready=False)
    return d.wait()


def _die_migrating(rig: Rig, spec: str) -> int:
    """A brand-new machine's first start: the power goes while the schema is being created."""
    d = rig.start_daemon(spec, wait_ready=False)
    rc = d.wait()
    con = sqlite3.connect(rig.db_path)
    try:
        assert con.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0  # rolled back whole
    finally:
        con.close()
    return rc


TAKEANDGO_PENDING = ("the harness does not yet run the take-and-go simulators (Modbus plant + shelf cameras, "
                     "edge.demo.takeandgo) beside a daemon subprocess")


@dataclass(frozen=True)
class Case:
    point: str  # a name in POINTS, or "sigkill.*" for a kill from outside
    workload: Callable[[Rig, str], int] | None
    nth: int = 1
    sync: bool = False
    first_order: str | None = None  # status of the customer's order after the restart; "absent": none
    pending: str = ""  # why a point the daemon reaches has no workload yet (shown as the skip reason)

    @property
    def spec(self) -> str:
        return f"{self.point}:{self.nth}"

    @property
    def id(self) -> str:
        return self.point + (f":{self.nth}" if self.nth != 1 else "")


CASES = [
    Case("vend.after_journal", _die_in_sale, first_order="failed"),  # never sent: refund, no dispense
    Case("vend.after_send", _die_in_sale, first_order="completed"),
    Case("sigkill.after_vend_frame", _kill_on_frame, first_order="completed"),
    Case("vend.before_result", _die_in_sale, first_order="completed"),
    Case("ledger.mid_transaction", _die_in_sale, nth=1, first_order="absent"),  # the journal write
    Case("ledger.mid_transaction", _die_in_sale, nth=2, first_order="completed"),  # the result write
    Case("sync.mid_ack", _die_acking, sync=True, first_order="completed"),
    Case("config.mid_apply", _die_applying_config, sync=True),
    Case("migration.mid", _die_migrating),
    Case("session.after_unlock", None, pending=TAKEANDGO_PENDING),
    Case("session.before_order", None, pending=TAKEANDGO_PENDING),
]


def test_every_crash_point_has_a_case_and_every_called_point_is_declared() -> None:
    assert {c.point for c in CASES if not c.point.startswith("sigkill.")} == set(POINTS)
    assert set(called_points()) <= set(POINTS), "a module calls a crash point missing from POINTS"
    # every point the daemon can reach today really is exercised below (not skipped)
    runnable = {c.point for c in CASES if c.workload is not None or c.pending}
    assert reached_points() <= runnable, "a reachable crash point has no workload (nor a pending reason) in CASES"


@pytest.fixture
def rig_factory(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    rigs: list[Rig] = []

    def make(sync: bool) -> Rig:
        rigs.append(make_rig(tmp_path, sync=sync))
        return rigs[-1]
    yield make
    for r in rigs:
        r.stop()


def _first_order(rig: Rig) -> str:
    con = sqlite3.connect(rig.db_path)
    try:
        row = con.execute("SELECT status FROM orders ORDER BY seq LIMIT 1").fetchone()
    finally:
        con.close()
    return row[0] if row else "absent"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_power_cut_at_crash_point_leaves_a_whole_machine(case: Case, rig_factory) -> None:  # type: ignore[no-untyped-def]
    if not case.point.startswith("sigkill.") and case.point not in reached_points():
        pytest.skip("not reached yet")
    if case.workload is None:
        pytest.skip(f"not reached yet: {case.pending}")
    rig = rig_factory(case.sync)
    rc = case.workload(rig, case.spec)
    assert rc in (EXIT_CODE, -9), f"expected a power cut at {case.spec}, exit code {rc}\n{rig.log_tail()}"

    d = rig.restart()
    if case.first_order is not None:
        assert _first_order(rig) == case.first_order
    if case.point == "config.mid_apply":
        deadline = time.monotonic() + 15
        while (d.ask("planogram") or {}).get("version") != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (d.ask("planogram") or {})["prices"]["cola"] == 195
    if case.point == "migration.mid":
        con = sqlite3.connect(rig.db_path)
        assert con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == MIGRATIONS[-1][0]
        con.close()
    # the machine sells again after the restart
    slot = "B1"
    assert rig.restock(slot) == {slot: 8}
    assert (d.ask(f"sell {slot}") or {}).get("status") == "completed"
    if case.sync:
        assert d.ask("wait_synced") == {"backlog": 0}
    assert d.quit() == 0
    assert check_invariants(rig) == []

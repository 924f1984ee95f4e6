"""`vendedge demo --scenario classic-vend --payment mdb`: the daemon (a subprocess) with its payment loop
running beside live card sales at the kiosk API, board faults and reader faults; the daemon's ledger
(audit), the reader's books and the board must agree."""

from __future__ import annotations

import pytest

from hw_sim.demo.classic_mdb import classic_vend_mdb

pytestmark = pytest.mark.timeout(120)


async def test_card_demo_agrees_with_the_reader_and_the_board(tmp_path):
    summary = await classic_vend_mdb(str(tmp_path), customers=20, seed=5)
    assert summary["mismatches"] == 0 and summary["integrity_ok"]
    assert summary["card_captured"] > 0 and summary["card_captured_total"] > 0
    assert summary["orders_completed"] == summary["sim_dispensed"]
    assert summary["card_captured"] + summary["cash_sales"] <= summary["orders_completed"]
    assert summary["reader_cash_sales"] <= summary["cash_sales"]

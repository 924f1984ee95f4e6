"""The checkout bench (`bench/run.py checkout`) runs through the daemon and keeps its JSON contract."""

from __future__ import annotations

import pytest

from bench.checkout_bench import run_daemon

pytestmark = pytest.mark.timeout(120)


async def test_three_sessions_through_the_daemon_give_every_figure() -> None:
    r = await run_daemon(3, seed=2)
    rates = [r[k] for k in ("basket_accuracy", "false_charge_rate", "review_rate", "missed_rate")]
    assert r["sessions"] == 3 and abs(sum(rates) - 1.0) < 1e-6
    assert all(0.0 <= x <= 1.0 for x in rates)
    assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] < 5000
    assert len(r["not_exact"]) == round(3 * (1 - r["basket_accuracy"]))
    for miss in r["not_exact"]:
        assert miss["outcome"] in ("review", "false_charge", "missed") and isinstance(miss["truth"], dict)

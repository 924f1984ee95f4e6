"""`bench/run.py vision --seeds`: rates are the mean over the seeds, each seed kept, timings the worst."""

from __future__ import annotations

import pytest

from bench.vision_bench import RATES, WORST, run_seeds

SMALL = {"tests": 1, "products": 16, "pairs": 2, "unknown": 1}  # 16: the latency frame has 16 cells


def test_seeds_average_the_rates_and_keep_each_seed() -> None:
    result = run_seeds([3, 4], **SMALL)
    assert result["seeds"] == [3, 4]
    assert set(result["per_seed"]) == {"3", "4"}
    assert result["reads"] == 2 * SMALL["products"] * SMALL["tests"]
    for k in RATES:
        a, b = result["per_seed"]["3"][k], result["per_seed"]["4"][k]
        assert result[k] == pytest.approx((a + b) / 2, abs=1e-4), k
    for k in WORST:
        assert result[k] > 0, k
    assert 0.0 <= result["novel_top1"] <= 1.0 and result["model_mb"] > 0

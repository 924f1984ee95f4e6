"""`bench/run.py vision --seeds`: rates are the mean over the seeds, each seed kept, timings the worst."""

from __future__ import annotations

import pytest

from bench.vision_bench import RATES, WORST, doubt_sources, run_seeds

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


def test_doubt_sources_add_up_to_the_doubted_rate() -> None:
    src = {"singles": [10, 1, 1, 0], "lookalikes": [30, 9, 4, 7]}
    got = doubt_sources(src)
    assert got == {"doubted_correct_singles": 0.1, "doubted_correct_lookalikes": 0.3,
                   "doubted_by_quality": 0.125, "doubted_by_margin": 0.175}
    assert doubt_sources({"singles": [0, 0, 0, 0], "lookalikes": [0, 0, 0, 0]})["doubted_by_margin"] == 0.0


def test_a_run_splits_its_doubt_by_product_and_by_gate() -> None:
    r = run_seeds([5], tests=3, products=16, pairs=4, unknown=1)
    doubted, q, m = r["doubted_correct_rate"], r["doubted_by_quality"], r["doubted_by_margin"]
    assert max(q, m) - 1e-4 <= doubted <= q + m + 1e-4  # every doubted read fails a gate, some both
    lo, hi = sorted((r["doubted_correct_singles"], r["doubted_correct_lookalikes"]))
    assert lo - 1e-4 <= doubted <= hi + 1e-4  # the whole is a weighted mean of its two parts
    assert set(r["per_seed"]["5"]) >= {"doubted_by_quality", "doubted_correct_lookalikes"}


def test_the_bound_is_pooled_over_the_seeds_and_moves_no_other_figure() -> None:
    kw = {"tests": 3, "products": 16, "pairs": 2, "unknown": 1}
    plain = run_seeds([3, 4], **kw)
    bounded = run_seeds([3, 4], bound=True, **kw)
    assert "doubt_bound" not in plain
    assert {k: bounded[k] for k in RATES} == {k: plain[k] for k in RATES}  # the reads themselves are the same
    b = bounded["doubt_bound"]
    assert b["reads"] == 2 * kw["products"] * kw["tests"]  # both seeds' reads of enrolled products, pooled
    # chosen with the answers: within the card's budget (0.1 % of 96 reads: none) on these very reads
    assert b["wrong_trusted_rate"] == 0.0 and b["unknown_trusted_rate"] <= 0.01
    assert 0.0 <= b["doubted_correct_rate"] <= 1.0 and {"min_margin", "max_spread_ratio"} <= set(b["gates"])

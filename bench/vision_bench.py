"""Vision benchmark on never-seen products: `python bench/run.py vision --novel [--seeds 7,1,2]`.

Products come from `bench.novel.generator` (its own drawing style, evaluation only). Each is
enrolled from 3 reference views through `Recognizer.enroll` into the shipped gallery (so the demo
SKUs compete too); every test view is classified as one cell through `Recognizer.recognize`.

A read is *doubted* when fusion would doubt it (`is_doubtful`): its quality (the similarity judged
against the SKU's own references) below `FusionParams.min_quality`, or its lead (the best-vs-second
cosine margin, weighed by the two products' spread ratios: `CellDetection.lead`) below the model
card's `doubt.min_margin` unless the pair check settled it (|z| at least `doubt.min_pair_z`,
`vision_models.pairs`). `wrong_trusted_rate` = wrong and not doubted / all
reads; `doubted_correct_rate` = doubted / correct reads. `unknown_trusted_rate`: reads of
`unknown` more products that were never enrolled (open set) that would be trusted, i.e. read as
some enrolled product without doubt (drawn after everything else, so the other figures do not
depend on it). `second_look_share`: reads that got a second look (margin below
`doubt.second_look_below`), which `embed_ms_p95` includes. Where the doubt comes from:
`doubted_correct_singles` / `_lookalikes` (right reads of products without / with a look-alike
partner that are doubted) and `doubted_by_quality` / `doubted_by_margin` (right reads failing the
open-set check / the margin-and-pair gate; a read may fail both). The look-alike report an operator
gets at enrollment (`vision_models.lookalike`, its bar chosen on the calibration designs):
`lookalike_flagged_share` of the enrolled products it names, and `doubted_correct_flagged` /
`_unflagged`, the right reads doubted of the products it names / of the others.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.novel.generator import make_catalogue, render_view
from edge.core.fusion import FusionParams
from vision_models import DEFAULT_MODEL_DIR, CellRoi, Recognizer, is_doubtful, settled
from vision_models.enroll import Gallery
from vision_models.lookalike import of_recognizer
from vision_models.train.calibrate_doubt import (
    MAX_SECOND_LOOK,
    Reads,
    choose_gates,
    pooled,
    read_columns,
    read_views,
)

VIEW = 64  # px, the side of a rendered view (a 640x480 shelf camera cell is about this size)


_RSS_PROBE = """
import resource, sys
import numpy as np
import edge.daemon, edge.web.app, edge.services.takeandgo_setup  # what the daemon imports
from vision_models import CellRoi, Recognizer
from vision_models.enroll import Gallery
from vision_models.lookalike import of_recognizer
gallery = Gallery.load(sys.argv[2]) if len(sys.argv) > 2 else None  # as the daemon loads its state-dir gallery
rec = Recognizer.load(sys.argv[1], threads=1, gallery=gallery)
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
rois = [CellRoi("A", i, (i % 10) * 64, (i // 10) * 64, 64, 64) for i in range(30)]
for _ in range(20):
    rec.recognize(frame, rois)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def daemon_rss_mb(model_dir: str | Path, gallery: Gallery | None = None) -> float:
    """Max RSS of a fresh process holding the daemon's imports and the loaded model after 20 frames
    of 30 cells (the daemon's own RSS with the model, without simulators or tests around it), with
    `gallery` loaded from a file as the daemon loads its own (None: the shipped seed gallery)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [str(model_dir)]
        if gallery is not None:
            gallery.save(Path(tmp) / "gallery.npz")
            args.append(str(Path(tmp) / "gallery.npz"))
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE, *args], capture_output=True, text=True,
                             check=True, timeout=120)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def run(*, refs: int = 3, tests: int = 40, products: int = 48, pairs: int = 12, seed: int = 1, unknown: int = 12,
        model_dir: str | Path = DEFAULT_MODEL_DIR, bound: bool = False,
        bound_reads: list[Reads] | None = None) -> dict[str, Any]:
    """One seed's figures (module doc). `bound`: also `doubt_bound` (`bound_of`) of this seed's reads;
    `bound_reads`: a list the reads for it are appended to (`run_seeds` pools them)."""
    rec = Recognizer.load(model_dir, threads=1)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    everything = make_catalogue(products + unknown, pairs, seed=900_000 + seed)  # the first `products`
    cat, strangers = everything[:products], everything[products:]  # are make_catalogue(products, ...)
    rng = np.random.default_rng(seed)
    for d in cat:
        rec.enroll(d.sku_id, [render_view(d, VIEW, rng, hard=False) for _ in range(refs)])
    flagged = set(of_recognizer(rec))
    by_flag = {True: [0, 0], False: [0, 0]}  # [right reads, doubted] of flagged / other products
    min_q = FusionParams().min_quality
    min_margin, min_pair_z = rec.min_margin, rec.min_pair_z
    roi = [CellRoi("X1", 0, 0, 0, VIEW, VIEW)]
    n = correct = pair_n = pair_ok = wrong_trusted = doubted_correct = 0
    wrong_trusted_sim = doubted_sim = 0
    # where the doubt of right reads comes from: [right reads, doubted, by quality, by margin] of
    # single products and of look-alikes
    src = {"singles": [0, 0, 0, 0], "lookalikes": [0, 0, 0, 0]}
    times: list[float] = []
    keep = bound or bound_reads is not None
    views: list[np.ndarray] = []  # with `keep`: every read's view (enrolled products', then strangers'), for the bound
    for d in cat:
        for _ in range(tests):
            img = render_view(d, VIEW, rng, hard=True)
            views += [img] if keep else []
            t0 = time.perf_counter()
            (det,) = rec.recognize(img, roi)
            times.append(time.perf_counter() - t0)
            ok = det.label == d.sku_id
            doubt_sim = det.similarity < min_q
            doubted = is_doubtful(det, min_q, min_margin, min_pair_z)
            n += 1
            correct += ok
            if d.partner:
                pair_n += 1
                pair_ok += ok
            wrong_trusted += (not ok) and not doubted
            wrong_trusted_sim += (not ok) and not doubt_sim
            doubted_correct += ok and doubted
            doubted_sim += ok and doubt_sim
            if ok:
                by_flag[d.sku_id in flagged][0] += 1
                by_flag[d.sku_id in flagged][1] += doubted
                tally = src["lookalikes" if d.partner else "singles"]
                for i, hit in enumerate((True, doubted, det.quality < min_q, not settled(det, min_margin, min_pair_z))):
                    tally[i] += hit
    second_looks = rec.second_looks
    strange_rng, strange_trusted = np.random.default_rng(10_000 + seed), 0
    for d in strangers:  # never enrolled: every trusted read of them names the wrong product
        for _ in range(tests):
            img = render_view(d, VIEW, strange_rng, hard=True)
            views += [img] if keep else []
            (det,) = rec.recognize(img, roi)
            strange_trusted += not is_doubtful(det, min_q, min_margin, min_pair_z)
    # batch latency: 16 cells of one frame in one inference (a shelf camera's cells)
    frame = np.concatenate([render_view(cat[i], VIEW, rng, hard=True) for i in range(16)], axis=1)
    rois = [CellRoi("X1", i, i * VIEW, 0, VIEW, VIEW) for i in range(16)]
    batch = []
    for _ in range(60):
        t0 = time.perf_counter()
        rec.recognize(frame, rois)
        batch.append(time.perf_counter() - t0)
    model = Path(model_dir) / "model.onnx"
    extra: dict[str, Any] = {}
    if keep:
        truth = [d.sku_id for d in cat for _ in range(tests)] + [d.sku_id for d in strangers for _ in range(tests)]
        reads = both_looks(rec, np.stack(views), truth, products * tests)
        if bound_reads is not None:
            bound_reads.append(reads)
        if bound:
            extra["doubt_bound"] = bound_of(reads, pair_check=rec.pair_shrink is not None)
    return {
        "model": f"{rec.card['name']} {rec.card['version']}",
        "products": products, "lookalike_pairs": pairs, "refs": refs, "reads": n,
        "novel_top1": round(correct / n, 4),
        "novel_lookalike_top1": round(pair_ok / max(1, pair_n), 4),
        "wrong_trusted_rate": round(wrong_trusted / n, 4),
        "doubted_correct_rate": round(doubted_correct / max(1, correct), 4),
        **doubt_sources(src),
        "lookalike_flagged_share": round(len(flagged) / products, 4),
        "doubted_correct_flagged": round(by_flag[True][1] / max(1, by_flag[True][0]), 4),
        "doubted_correct_unflagged": round(by_flag[False][1] / max(1, by_flag[False][0]), 4),
        "similarity_only": {"wrong_trusted_rate": round(wrong_trusted_sim / n, 4),
                            "doubted_correct_rate": round(doubted_sim / max(1, correct), 4)},
        "unknown_products": unknown,
        "unknown_trusted_rate": round(strange_trusted / max(1, unknown * tests), 4),
        "second_look_share": round(second_looks / n, 4),
        "doubt": {"min_quality": min_q, "min_margin": min_margin, "radius_slack": rec.radius_slack,
                  "max_spread_ratio": rec.max_spread_ratio, "ratio_margin_gain": rec.ratio_margin_gain,
                  "ratio_weight": rec.ratio_weight,
                  "second_look_below": rec.second_look_below, "pair_shrink": rec.pair_shrink,
                  "min_pair_z": min_pair_z if np.isfinite(min_pair_z) else None},
        "embed_ms_p95": round(float(np.percentile(batch, 95)) * 1000, 2),
        "embed_ms_p95_batch": 16,
        "cell_ms_p95": round(float(np.percentile(times, 95)) * 1000, 2),
        "model_mb": round(model.stat().st_size / 1e6, 3),
        "rss_mb_model_loaded": round(rss_mb, 1),
        "rss_note": "max RSS of this bench process right after Recognizer.load (not the daemon)",
        "rss_mb_daemon_process": daemon_rss_mb(model_dir, rec.gallery),
        "rss_daemon_note": f"a fresh process with the daemon's imports, the model and this run's gallery "
                           f"({len(rec.labels)} labels: the seed's and the {products} enrolled products) after "
                           f"20 frames of 30 cells",
        "targets": {"novel_top1": 0.97, "novel_lookalike_top1": 0.93, "wrong_trusted_rate": 0.001,
                    "doubted_correct_rate": 0.05, "model_mb": 8, "rss_mb": 150},
        **extra,
    }


def both_looks(rec: Recognizer, views: np.ndarray, truth: list[str], enrolled: int) -> Reads:
    """Every view read without and with the second look (`calibrate_doubt.read_views`), the first
    `enrolled` of them views of enrolled products; `rec`'s second-look band is left as it was."""
    band = rec.second_look_below
    try:
        first, again = (read_columns(read_views(rec, views, look)) for look in (0.0, 9.0))
    finally:
        rec.second_look_below = band
    return Reads(first, again, np.asarray(truth), np.arange(len(views)) < enrolled)


def bound_of(reads: Reads, *, pair_check: bool) -> dict[str, Any]:
    """The card's own calibration rule (`calibrate_doubt.choose_gates`: <= 0.1 % wrong-but-trusted
    reads, never-enrolled products' reads trusted <= 1 %, second look on <= 30 % of reads) run on
    this bench's reads themselves: the gates are chosen with the answers, so the doubt they leave is
    what the embedding allows under that rule, not a result (docs/vision.md, "How far any gate ...").
    Pooled over seeds by `run_seeds`: one seed's budget is a read or two."""
    gates = choose_gates(reads, min_quality=FusionParams().min_quality, target=0.001, unknown_target=0.01,
                         pair_check=pair_check, max_second_look=MAX_SECOND_LOOK)
    cal = gates.pop("calibration")
    return {"doubted_correct_rate": cal["doubted_correct_rate"], "wrong_trusted_rate": cal["wrong_trusted_rate"],
            "unknown_trusted_rate": cal["unknown_trusted_rate"], "reads": int(reads.known.sum()),
            "gates": {k: gates[k] for k in ("min_margin", "max_spread_ratio", "min_pair_z") if k in gates},
            "note": "gates chosen on these reads with their answers (the card's rule): a diagnostic of "
                    "the embedding, not a result"}


def doubt_sources(src: dict[str, list[int]]) -> dict[str, float]:
    """Shares of right reads doubted, split by product (singles, look-alikes) and by gate (quality:
    the open-set check; margin: the lead not reached and the pair check not sure; a read may fail
    both): `src` holds [right reads, doubted, by quality, by margin] per kind of product."""
    total = [sum(v) for v in zip(*src.values(), strict=True)]  # singles and look-alikes together
    return {"doubted_correct_singles": round(src["singles"][1] / max(1, src["singles"][0]), 4),
            "doubted_correct_lookalikes": round(src["lookalikes"][1] / max(1, src["lookalikes"][0]), 4),
            "doubted_by_quality": round(total[2] / max(1, total[0]), 4),
            "doubted_by_margin": round(total[3] / max(1, total[0]), 4)}


RATES = ("novel_top1", "novel_lookalike_top1", "wrong_trusted_rate", "doubted_correct_rate", "unknown_trusted_rate",
         "second_look_share", "doubted_correct_singles", "doubted_correct_lookalikes", "doubted_by_quality",
         "doubted_by_margin", "lookalike_flagged_share", "doubted_correct_flagged", "doubted_correct_unflagged")
WORST = ("embed_ms_p95", "cell_ms_p95", "rss_mb_model_loaded", "rss_mb_daemon_process")


def run_seeds(seeds: list[int], **kw: Any) -> dict[str, Any]:
    """`run` at each seed: the rates averaged over the seeds (one set of 48 products is too few to
    compare two models: one model's top-1 spans ~6 points across seeds), timings and memory the
    worst seed's, and every seed's rates under `per_seed`."""
    bound = bool(kw.pop("bound", False))
    pool: list[Reads] | None = [] if bound else None
    runs = {s: run(seed=s, bound_reads=pool, **kw) for s in seeds}
    first = runs[seeds[0]]
    # whether the card has a pair check (its ridge, None: none), as the runs read it
    extra = {"doubt_bound": bound_of(pooled(pool), pair_check=bool(first["doubt"]["pair_shrink"]))} if pool else {}
    return {
        **{k: v for k, v in first.items() if k not in RATES + WORST + ("similarity_only",)},
        **{k: round(float(np.mean([r[k] for r in runs.values()])), 4) for k in RATES},
        **{k: max(r[k] for r in runs.values()) for k in WORST},
        "reads": sum(r["reads"] for r in runs.values()),
        "seeds": list(seeds),
        "per_seed": {str(s): {k: r[k] for k in RATES} for s, r in runs.items()},
        **extra,
    }

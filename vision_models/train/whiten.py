"""Whiten a trained model's pooled features against what a shelf does to a product (no retraining).

    python -m vision_models.train.whiten --model-dir vision_models/models/shelf-v2 --data DATA \\
        --out OUT --version 2.9.0
    python -m vision_models.train.calibrate_doubt --model-dir OUT

A read differs from its product's enrollment views by pose, light, glare, blur, JPEG and a hand, and
those differences lie mostly along a few directions of the backbone's pooled features, the same for
every product. `nuisance_scatter` measures them on `--designs` designs of the training generator
(`vision_models.train.randomized`, a seed of its own that no calibration or held-out check uses):
the scatter of each shelf read's features around its design's enrollment views (3 clean shots, each
as `augment.enrollment_views`, as `Recognizer.reference` makes them). `whitening` keeps its top
`--rank` principal directions and scales each by (variance + `--alpha` x mean variance)^-1/2
relative to the rest, so the nuisance no longer outweighs what tells products apart (within-class
whitening, as in face and person re-identification).

The step is baked into the ONNX graph (`whitened_model`): the pooled features f become
f + ((f U) * g) U^T (U: 1280 x rank, g: the gains), the model's `features` output; its `embedding`
is their L2-normalized value (1280-d; the 128-d projection of training is dropped), so the gallery,
the pair check and the open-set check all work in the whitened features. The gallery of the
simulator catalogue and the softmax scale are made again for the new model (`export`), and the
doubt must be calibrated again (`calibrate_doubt`). Measured: docs/vision.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from vision_models.augment import enrollment_views
from vision_models.recognizer import CARD_FILE, FEATURES_OUTPUT, MODEL_FILE, Recognizer
from vision_models.train.randomized import STYLES, generate

log = structlog.get_logger(__name__)

WHITEN_SEED = 8_675_309  # no training run (2030, 2040, ...), validation (616161), calibration or held-out check uses it
DESIGNS = 640
REFS, SHELF_VIEWS = 3, 20
RANK = 256  # principal nuisance directions whitened (of 1280); 128 kept ~90 % of the gain, 256 ~97 % (docs/vision.md)
ALPHA = 0.1  # ridge of the whitening, x the mean variance
CHUNK = 80  # designs drawn at a time (memory)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64)."""
    x = np.asarray(x, np.float64)
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out


def design_residuals(refs: np.ndarray, reads: np.ndarray) -> np.ndarray:
    """Each read's L2-normalized features minus the normalized mean of its design's normalized
    enrollment-view features (refs: V x D, reads: N x D): what the shelf added."""
    centre = unit(unit(refs).mean(axis=0))
    out: np.ndarray = unit(reads) - centre
    return out


def nuisance_scatter(rec: Recognizer, *, designs: int = DESIGNS, seed: int = WHITEN_SEED,
                     style: str = "flat") -> np.ndarray:
    """The mean outer product of `design_residuals` over `designs` designs of the training generator
    (`REFS` clean shots + `SHELF_VIEWS` shelf reads each), in `rec`'s pair features (D x D)."""
    total, count = None, 0
    for start in range(0, designs, CHUNK):
        n = min(CHUNK, designs - start)
        x, _, _ = generate(n, REFS + SHELF_VIEWS, rec.size, seed + start, clean_views=REFS, style=style)
        views = x.reshape(n, REFS + SHELF_VIEWS, *x.shape[1:])
        for k in range(n):
            refs = rec.pair_features([v for im in views[k, :REFS] for v in enrollment_views(im, rec.size)])
            r = design_residuals(refs, rec.pair_features(list(views[k, REFS:])))
            total = r.T @ r if total is None else total + r.T @ r
            count += len(r)
        log.info("whiten_scatter", designs=start + n, of=designs)
    if total is None:
        raise ValueError("need at least one design")
    out: np.ndarray = total / count
    return out


def whitening(scatter: np.ndarray, rank: int = RANK, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(U, g): the top `rank` principal directions of `scatter` (D x rank) and each one's gain, so
    that f + ((f U) * g) U^T scales direction i by w_i / w_rest with w = (variance + alpha x mean
    variance)^-1/2 and w_rest the median w of the directions not kept (features are compared by
    angle: only the ratio matters)."""
    s = np.asarray(scatter, np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or not 0 < rank < s.shape[0]:
        raise ValueError(f"need a square scatter and 0 < rank < its side, got {s.shape}, rank {rank}")
    ev, vec = np.linalg.eigh((s + s.T) / 2)  # ascending
    w = (np.maximum(ev, 0) + alpha * max(float(ev.mean()), 1e-12)) ** -0.5
    gain = w[-rank:] / float(np.median(w[:-rank])) - 1
    return vec[:, -rank:].astype(np.float32), gain.astype(np.float32)


def whiten(features: np.ndarray, u: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """f + ((f U) * g) U^T, row by row: what the whitened graph computes (before normalizing)."""
    f = np.asarray(features, np.float64)
    out: np.ndarray = f + ((f @ u) * gain) @ u.T
    return out


def whitened_model(model: Any, u: np.ndarray, gain: np.ndarray) -> Any:
    """The ONNX model with its pooled features (the `features` output) whitened (`whiten`): outputs
    `embedding` (the whitened features, L2-normalized) and `features` (whitened); every node that only
    fed the old embedding is dropped. `model`: an onnx.ModelProto with a `features` output."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    if FEATURES_OUTPUT not in {o.name for o in g.output}:
        raise ValueError(f"the model has no {FEATURES_OUTPUT!r} output to whiten")
    pooled = "pooled_features"
    renamed = {FEATURES_OUTPUT: pooled, "embedding": "unwhitened_embedding"}  # the latter pruned below
    for node in g.node:
        node.input[:] = [renamed.get(t, t) for t in node.input]
        node.output[:] = [renamed.get(t, t) for t in node.output]
    g.initializer.extend([numpy_helper.from_array(np.asarray(u, np.float32), "whiten_u"),
                          numpy_helper.from_array(np.asarray(gain, np.float32), "whiten_gain"),
                          numpy_helper.from_array(np.array([1e-6], np.float32).reshape(()), "whiten_eps")])
    g.node.extend([
        helper.make_node("MatMul", [pooled, "whiten_u"], ["whiten_coef"]),
        helper.make_node("Mul", ["whiten_coef", "whiten_gain"], ["whiten_scaled"]),
        helper.make_node("Gemm", ["whiten_scaled", "whiten_u", pooled], [FEATURES_OUTPUT], transB=1),
        helper.make_node("ReduceL2", [FEATURES_OUTPUT], ["whiten_norm"], axes=[1], keepdims=1),
        helper.make_node("Clip", ["whiten_norm", "whiten_eps"], ["whiten_norm_clipped"]),
        helper.make_node("Div", [FEATURES_OUTPUT, "whiten_norm_clipped"], ["embedding"]),
    ])
    dim = int(u.shape[0])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["n", dim])
                     for name in ("embedding", FEATURES_OUTPUT)])
    _prune(g)
    del g.value_info[:]
    onnx.checker.check_model(model)
    return model


def _prune(g: Any) -> None:
    """Drop the nodes no graph output depends on, then the initializers no node reads."""
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):
        if any(t in needed for t in node.output):
            keep.append(node)
            needed.update(t for t in node.input if t)
    del g.node[:]
    g.node.extend(reversed(keep))
    used = {t for node in g.node for t in node.input}
    inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)


def make_model_dir(src: Path, out: Path, data: Path, *, version: str, designs: int = DESIGNS, rank: int = RANK,
                   alpha: float = ALPHA, style: str = "flat") -> dict[str, Any]:
    """`src`'s model whitened into `out` (model.onnx, gallery.npz of the simulator catalogue, the card
    with a new softmax scale, evaluation and latency; no doubt section: run `calibrate_doubt`)."""
    import onnx

    from vision_models.train.dataset import DataDir
    from vision_models.train.export import finish_card, seed_gallery

    rec = Recognizer.load(src)
    if rec.pair_dim == int(rec.card["embedding_dim"]):
        raise ValueError(f"{src}: the model has no pooled {FEATURES_OUTPUT!r} output to whiten")
    scatter = nuisance_scatter(rec, designs=designs, style=style)
    u, gain = whitening(scatter, rank, alpha)
    model = whitened_model(onnx.load(str(src / MODEL_FILE)), u, gain)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(model.SerializeToString())
    card = json.loads((src / CARD_FILE).read_text(encoding="utf-8"))
    card.pop("doubt", None)
    dim = int(u.shape[0])
    card.update(version=version, embedding_dim=dim,
                method=card["method"].replace("-> linear -> L2-normalized embedding", "-> whitened against shelf "
                                              "nuisance (vision_models.train.whiten) -> L2-normalized embedding"))
    card["onnx"].update(sha256=hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest(),
                        pair_features={"output": FEATURES_OUTPUT, "dim": dim})
    card["whitening"] = {"source": f"{card['name']} {rec.card['version']}", "source_sha256": rec.card["onnx"]["sha256"],
                         "seed": WHITEN_SEED, "designs": designs, "refs": REFS, "shelf_views": SHELF_VIEWS,
                         "style": style, "rank": rank, "alpha": alpha,
                         "command": f"python -m vision_models.train.whiten --model-dir SRC --data DATA --out OUT "
                                    f"--version {version} --designs {designs} --rank {rank} --alpha {alpha}"}
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    d = DataDir(data)
    _, card["similarity_scale"] = seed_gallery(out, list(card["labels"]), d, dim)
    return finish_card(out, card, d)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.whiten")
    p.add_argument("--model-dir", type=Path, required=True, help="a model directory with a pooled features output")
    p.add_argument("--data", type=Path, required=True, help="python -m hw_sim.camera.dataset --out DATA (gallery, scale)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--designs", type=int, default=DESIGNS)
    p.add_argument("--rank", type=int, default=RANK)
    p.add_argument("--alpha", type=float, default=ALPHA)
    p.add_argument("--style", choices=STYLES, default="flat")
    a = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    card = make_model_dir(a.model_dir, a.out, a.data, version=a.version, designs=a.designs, rank=a.rank,
                          alpha=a.alpha, style=a.style)
    print(json.dumps({k: card.get(k) for k in ("name", "version", "embedding_dim", "similarity_scale", "evaluation")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

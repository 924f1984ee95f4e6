"""Episodic fine-tuning of the shipped embedder on designs never drawn before (CPU, torch).

    python -m vision_models.train.episodic --data DATA --work WORK \\
        --init-onnx vision_models/models/shelf-v2/model.onnx --minutes 50
    python -m vision_models.train.metric --data DATA --work WORK --backbone effnet-lite0 --size 96 \\
        --export OUT --int8 --version X.Y.Z             # the same export as a `metric` run

`metric` trains on a fixed pool of generated designs (8,000 x 6 views): its held-out top-1 stops
rising long before its loss does, the network learns the pool. Here every step draws designs that
were never drawn before (`randomized.generate` with the step's own seed; ~2.6 ms a view), and the
loss is the task the daemon does: each design's *clean* enrollment view is its prototype, its shelf
views are classified against every prototype in the batch (CosFace margin, plus the look-alike
twin's margin: half the designs come as twins one mark apart). `--memory N` adds the clean-view
prototypes of the last N designs as negatives (2.7.0: 2,048), so a shelf view competes with as
many products as a read in a full gallery does. `--twin-aware` draws each twin pair's views under
one nuisance and trains a view that hides the mark towards "one of the two"
(`randomized.generate_twin_aware`; measured, not shipped: docs/vision.md). `--backbone
effnet-lite0-s16` fine-tunes the network with its last stage at stride 1 (a 6 x 6 final map at
96 px; the same weights, so it starts from a stride-32 file; export with `metric --backbone
effnet-lite0-s16`). `--twin-z-weight` and `--compact-weight` add losses on the pooled backbone
features, where the daemon's pair and open-set checks judge a read (`vision_models.train.pairloss`):
each twin's shelf views pushed past `--twin-z` of the pair check's z, and shelf views held near
their clean view against the distance to other designs. The simulator's classes keep a CosFace
head so the demo catalogue is not forgotten.

`--init-onnx` starts from a shipped model: its weights are read back from the ONNX file (int8
weights dequantized, batch norm already folded into the convolutions), so the batch-norm layers
are frozen as identities plus the folded bias and stay in eval mode; nothing downloads.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from torch import nn
from torch.nn import functional as F

from vision_models.train.backbones import (
    BACKBONES,
    EMBED_DIM,
    EffNetEmbedder,
    add_frozen_blocks,
    build_backbone,
    freeze_early,
)
from vision_models.train.metric import (
    SIM_SCALE,
    VAL_SEED,
    _augment,
    _open_data,
    optimizer,
    schedule,
    to_input,
    validate,
)
from vision_models.train.pairloss import SURE_AT, compact_loss, twin_z_loss
from vision_models.train.randomized import STYLES, generate, generate_twin_aware
from vision_models.train.train import MARGIN, CosFaceHead
from vision_models.types import EMPTY

log = structlog.get_logger(__name__)

# a twin's shelf view showing at least this share of its clean view's mark difference is a sure label
# (`episode_loss`); below it the target moves towards an even split with the twin
VISIBLE_FULL = SURE_AT


def _dequantized(path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every Conv in graph order, and of the Gemm (the projection)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:  # DequantizeLinear of initializers: (q - zero point) x scale, per axis
        if n.op_type == "DequantizeLinear" and n.input[0] in values:
            q, scale = values[n.input[0]].astype(np.float64), values[n.input[1]].astype(np.float64)
            zp = values[n.input[2]].astype(np.float64) if len(n.input) > 2 else np.zeros_like(scale)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            values[n.output[0]] = ((q - zp) * scale).astype(np.float32)
    convs = [(values[n.input[1]], values[n.input[2]]) for n in g.node if n.op_type == "Conv"]
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    w = values[gemm.input[1]]
    if not any(a.name == "transB" and a.i == 1 for a in gemm.attribute):
        w = w.T
    return convs, (w, values[gemm.input[2]])


def load_onnx_init(model: EffNetEmbedder, path: Path) -> None:
    """Set `model` to the weights in a shipped ONNX file (see the module doc)."""
    convs, (pw, pb) = _dequantized(path)
    mods = [m for m in model.net.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    pairs = [(c, b) for c, b in zip(mods, mods[1:], strict=False)
             if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)]
    if len(pairs) != len(convs):
        raise SystemExit(f"{path}: {len(convs)} convolutions, the network has {len(pairs)}")
    with torch.no_grad():
        for (conv, bn), (w, b) in zip(pairs, convs, strict=True):
            if tuple(conv.weight.shape) != w.shape:
                raise SystemExit(f"{path}: a {w.shape} kernel where the network has {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(b))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) = x
        model.proj.weight.copy_(torch.from_numpy(pw))
        model.proj.bias.copy_(torch.from_numpy(pb))


def freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def episode_loss(emb: torch.Tensor, classes: int, queries: int, partner: np.ndarray, pair_margin: float,
                 margin: float = MARGIN, scale: float = SIM_SCALE, memory: torch.Tensor | None = None,
                 visible: np.ndarray | None = None) -> torch.Tensor:
    """`emb`: per class, 1 clean view then `queries` shelf views. Each shelf view is classified
    against all the batch's clean-view prototypes (CosFace `margin` at `scale`; its twin's logit
    raised by `pair_margin`, so a look-alike must beat its twin by the sum) and against `memory`,
    earlier steps' prototypes (other designs: negatives only).

    `visible` (per view of `emb`, `randomized.generate_twin_aware`): how much of its twin-telling
    mark a shelf view still shows. A twin's view showing less than `VISIBLE_FULL` of it is not a
    sure label: its target moves towards half its own class, half its twin (at 0: an even split),
    and both margins (CosFace's and the twin's) shrink with it, so the network learns to say "one
    of the two" when the mark is hidden rather than guess with confidence."""
    per = emb.view(classes, 1 + queries, -1)
    protos = F.normalize(per[:, 0], dim=1)
    q = per[:, 1:].reshape(classes * queries, -1)
    y = torch.arange(classes).repeat_interleave(queries)
    twin = torch.from_numpy(partner)[y]
    has = twin >= 0
    sure = torch.ones(len(y))
    if visible is not None:
        shown = torch.from_numpy(np.asarray(visible, np.float32).reshape(classes, 1 + queries)[:, 1:].reshape(-1))
        sure = torch.where(has, torch.clamp(shown / VISIBLE_FULL, 0.0, 1.0), sure)
    twin_hot = F.one_hot(twin.clamp(min=0), classes) * has[:, None]
    # both margins shrink with `sure`: with the mark hidden, equal cosines to the twins are the answer
    cos = q @ protos.T - margin * F.one_hot(y, classes) * sure[:, None] + pair_margin * twin_hot * sure[:, None]
    target = F.one_hot(y, classes).float()
    target = target - (0.5 * (1 - sure))[:, None] * (target - twin_hot.float())
    if memory is not None and len(memory):
        cos = torch.cat([cos, q @ memory.T], dim=1)
        target = torch.cat([target, torch.zeros(len(y), len(memory))], dim=1)
    return F.cross_entropy(scale * cos, target)


class PrototypeMemory:
    """The clean-view prototypes of the last `size` designs, detached (cross-batch memory): a shelf
    view then competes with thousands of designs, not only its batch's 2 x `pairs`, as a read
    competes with a whole gallery. Designs never repeat between steps, so every entry is a negative."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.bank = torch.zeros(0, EMBED_DIM)

    def push(self, emb: torch.Tensor, classes: int, queries: int) -> None:
        if self.size <= 0:
            return
        protos = F.normalize(emb.detach().view(classes, 1 + queries, -1)[:, 0], dim=1)
        self.bank = torch.cat([protos, self.bank])[: self.size]


@torch.no_grad()
def _class_means(model: nn.Module, x: np.ndarray, y: np.ndarray, classes: int, per: int = 48) -> torch.Tensor:
    rng = np.random.default_rng(0)
    out = torch.randn(classes, EMBED_DIM) * 0.01
    for c in range(classes):
        idx = np.flatnonzero(y == c)
        if len(idx):
            idx = rng.choice(idx, min(per, len(idx)), replace=False)
            out[c] = F.normalize(model(to_input(x[idx])).mean(0), dim=0)
    return out


def train(a: argparse.Namespace) -> int:
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    data = _open_data(a.data, a.size)
    cells = data.train()
    sim_labels = [*data.demo_skus, EMPTY, *data.distractors]
    index = {k: i for i, k in enumerate(sim_labels)}
    sim_x, sim_y = cells.x, np.array([index[n] for n in cells.labels])
    sim_partner = np.full(len(sim_labels), -1)
    for p, q in data.lookalike_pairs:
        sim_partner[index[p]], sim_partner[index[q]] = index[q], index[p]
    val, _, _ = generate(a.val_classes, 8, a.size, VAL_SEED)
    val = val.reshape(a.val_classes, 8, a.size, a.size, 3)
    model = build_backbone(a.backbone, a.size, pretrained=a.init_onnx is None)
    assert isinstance(model, EffNetEmbedder)  # the choices are EfficientNet-Lite0's
    if a.init_onnx is not None:
        load_onnx_init(model, a.init_onnx)
    freeze_early(model, a.frozen_blocks)
    model.eval()
    head = CosFaceHead(EMBED_DIM, len(sim_labels), torch.from_numpy(sim_partner), a.pair_margin)
    with torch.no_grad():
        head.weight.copy_(_class_means(model, sim_x, sim_y, len(sim_labels)))
    history: list[dict[str, Any]] = [{"step": 0, "val_top1": round(validate(model, val), 4), "s": 0.0}]
    log.info("progress", **history[0])
    opt = optimizer(model, head, a.lr)
    rng = np.random.default_rng(a.seed + 1)
    a.work.mkdir(parents=True, exist_ok=True)
    model.train()
    freeze_bn(model)
    memory = PrototypeMemory(a.memory)
    t_train, loss_sum, step, n_sum = time.perf_counter(), 0.0, 0, 0
    budget = a.minutes * 60.0
    while True:
        done = (time.perf_counter() - t_train) / budget
        last = done >= 1.0
        step += 1
        schedule(opt, done, warmup=0.03)
        classes = 2 * a.pairs
        draw_seed = a.seed * 1_000_003 + step
        if a.twin_aware:
            fx, _, fp, shown = generate_twin_aware(classes, 1 + a.queries, a.size, draw_seed, clean_views=1, style=a.style)
        else:
            (fx, _, fp), shown = generate(classes, 1 + a.queries, a.size, draw_seed, clean_views=1, style=a.style), None
        si = rng.integers(0, len(sim_x), a.sim_batch)
        xb = _augment(to_input(np.concatenate([sim_x[si], fx])), rng)
        pooled = model.pooled(xb)
        emb = F.normalize(model.proj(pooled), dim=1)
        ys = torch.from_numpy(sim_y[si].astype(np.int64))
        loss = F.cross_entropy(head(emb[: a.sim_batch], ys), ys) + episode_loss(
            emb[a.sim_batch :], classes, a.queries, fp, a.pair_margin, a.margin, a.scale, memory.bank, shown
        )
        views = pooled[a.sim_batch :]
        if a.twin_z_weight > 0:
            loss = loss + a.twin_z_weight * twin_z_loss(views, classes, 1 + a.queries, fp, a.pair_shrink, a.twin_z,
                                                        shown)
        if a.compact_weight > 0:
            loss = loss + a.compact_weight * compact_loss(views, classes, 1 + a.queries)
        memory.push(emb[a.sim_batch :], classes, a.queries)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        loss_sum, n_sum = loss_sum + float(loss.detach()), n_sum + 1
        if step % a.every == 0 or last:
            rec = {"step": step, "loss": round(loss_sum / n_sum, 4), "val_top1": round(validate(model, val), 4),
                   "s": round(time.perf_counter() - t_train, 1)}
            freeze_bn(model)  # validate() puts the model back in train mode
            history.append(rec)
            log.info("progress", **rec)
            loss_sum, n_sum = 0.0, 0
            torch.save({"model": model.state_dict(), "step": step, "history": history,
                        "args": _card_args(a)}, a.work / f"{a.backbone}.pt")
        if last:
            break
    (a.work / f"{a.backbone}.json").write_text(json.dumps({"history": history}, indent=2) + "\n", encoding="utf-8")
    return 0


def _card_args(a: argparse.Namespace) -> dict[str, Any]:
    """What `metric --export` reads of a checkpoint's args, and how this run is described."""
    cmd = (f"python -m vision_models.train.episodic --data DATA --work WORK --init-onnx {a.init_onnx} "
           f"--backbone {a.backbone} "
           f"--minutes {a.minutes:g} --pairs {a.pairs} --queries {a.queries} --lr {a.lr} --seed {a.seed} "
           f"--pair-margin {a.pair_margin:g} --margin {a.margin:g} --scale {a.scale:g} --memory {a.memory} "
           f"--style {a.style}" + (" --twin-aware" if a.twin_aware else "")
           + (f" --twin-z-weight {a.twin_z_weight:g} --twin-z {a.twin_z:g} --pair-shrink {a.pair_shrink:g}"
              if a.twin_z_weight > 0 else "")
           + (f" --compact-weight {a.compact_weight:g}" if a.compact_weight > 0 else "")
           + (f" --frozen-blocks {a.frozen_blocks}" if a.frozen_blocks else ""))
    remembered = f", and the last {a.memory} designs' prototypes as negatives" if a.memory > 0 else ""
    return vars(a) | {
        "data": str(a.data), "work": str(a.work), "init_onnx": str(a.init_onnx),
        "recipe": {
            "command": cmd,
            "description": "fine-tuned from --init-onnx on designs never drawn before: every step "
            f"{2 * a.pairs} new designs of vision_models.train.randomized in style {a.style!r} (half look-alike "
            f"twins one mark apart), 1 clean enrollment view + {a.queries} shelf views each, plus {a.sim_batch} simulator "
            "cells (hw_sim.camera.dataset, see its command)",
            "loss": f"episodic CosFace s={a.scale:g} m={a.margin:g} (shelf views against the batch's clean-view "
            f"prototypes{remembered}), twin margin {a.pair_margin}"
            + ("; twins drawn under one nuisance, a view hiding the mark trained towards an even split with "
               f"its twin (below {VISIBLE_FULL} of the mark shown)" if a.twin_aware else "")
            + (f"; pooled features: twins' pair-check z past {a.twin_z:g} (x{a.twin_z_weight:g}, shrink "
               f"{a.pair_shrink:g}; vision_models.train.pairloss"
               + (", a view hiding its mark held to |z| <= 2" if a.twin_aware else "") + ")"
               if a.twin_z_weight > 0 else "")
            + (f"; pooled features: shelf views near their clean view against other designs (x{a.compact_weight:g})"
               if a.compact_weight > 0 else "")
            + "; simulator classes: CosFace head",
            "batch": f"{a.sim_batch} simulator cells + {2 * a.pairs} new designs x {1 + a.queries} views",
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.episodic", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="`python -m hw_sim.camera.dataset` output")
    p.add_argument("--work", type=Path, required=True, help="checkpoint and history (as `metric` writes them)")
    p.add_argument("--init-onnx", type=Path, default=None, help="start from this shipped model (else ImageNet)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--backbone", choices=[b for b in BACKBONES if b.startswith("effnet")], default="effnet-lite0",
                   help="-s16: the last stage at stride 1 (starts from a stride-32 --init-onnx alike)")
    p.add_argument("--minutes", type=float, default=50.0, help="wall-time budget; the schedule follows the clock")
    p.add_argument("--lr", type=float, default=2e-4, help="backbone peak learning rate (head: 4x)")
    p.add_argument("--sim-batch", type=int, default=16)
    p.add_argument("--pairs", type=int, default=16, help="new designs per step = 2 x this")
    p.add_argument("--queries", type=int, default=2, help="shelf views per design (plus 1 clean view)")
    p.add_argument("--pair-margin", type=float, default=0.2)
    p.add_argument("--margin", type=float, default=MARGIN, help="CosFace margin of the episode loss")
    p.add_argument("--scale", type=float, default=SIM_SCALE, help="logit scale of the episode loss")
    p.add_argument("--memory", type=int, default=0,
                   help="earlier designs' prototypes kept as extra negatives (cross-batch memory; 0: none)")
    p.add_argument("--style", choices=STYLES, default="flat",
                   help="drawing style of the step's designs (randomized.generate; 'mixed': half 'broad')")
    p.add_argument("--twin-aware", action="store_true",
                   help="twins' views drawn under the same nuisance; a view hiding the mark is trained as "
                        "'one of the two' (randomized.generate_twin_aware, episode_loss)")
    p.add_argument("--twin-z-weight", type=float, default=0.0,
                   help="weight of the pair check's z on twins' shelf views (pooled features; 0: off)")
    p.add_argument("--twin-z", type=float, default=8.0, help="the z each twin view is pushed past")
    p.add_argument("--pair-shrink", type=float, default=10.0, help="the pair check's shrink (the card's)")
    p.add_argument("--compact-weight", type=float, default=0.0,
                   help="weight of the shelf-view-to-clean-view distance against other designs (pooled; 0: off)")
    p.add_argument("--val-classes", type=int, default=120)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=2)
    add_frozen_blocks(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return train(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

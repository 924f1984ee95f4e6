"""The README's first steps and CLI table agree with the Makefile and the `vendedge` parser."""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess

import pytest

from edge.cli import _parser

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_quick_start_says_how_to_get_vendedge_on_path() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert ". .venv/bin/activate" in quick and ".venv/bin/vendedge" in quick


def test_make_demo_installs_socat_and_says_where_vendedge_is() -> None:
    dry = subprocess.run(["make", "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0, dry.stderr
    assert "apt-get install -y -qq socat" in dry.stdout and ". .venv/bin/activate" in dry.stdout


def _cli_rows() -> list[str]:
    table = README.split("## CLI", 1)[1].split("\n## ", 1)[0]
    return [m.replace("\\|", "|") for m in re.findall(r"^\| `(vendedge [^`]+)`", table, re.M)]


@pytest.mark.parametrize("usage", _cli_rows())
def test_every_cli_row_parses_as_written(usage: str) -> None:
    words = shlex.split(re.sub(r"\[([^\]]+)\]", r"\1", usage))[1:]  # optional parts spelled out too
    if words[0] == "refcloud":
        pytest.skip("its own parser (sync.refcloud), exercised by its tests")
    filled = [{"FILE": "x.toml", "S": "classic-vend", "DIR": "d", "P": "0", "NAME": "tech2"}.get(w, w)
              for w in words]
    filled = [w.split("|")[0] for w in filled]  # a|b choices: take the first
    args = _parser().parse_args(filled)  # exits (a test failure) on any flag the command does not have
    assert args.cmd == words[0]

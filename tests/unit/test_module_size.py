"""No module over 400 lines in the machine's packages (STYLE.md: split before a module holds many
classes). No allow-list: a module that grows past the limit is split along a seam, not excused."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "drivers", "sync", "vision_models", "hw_sim")
MAX_LINES = 400


def _modules() -> list[pathlib.Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _lines(path: pathlib.Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def test_the_packages_are_where_the_test_looks() -> None:
    assert all((ROOT / pkg / "__init__.py").is_file() for pkg in PACKAGES)
    assert len(_modules()) > 100  # a wrong root would pass every module check below


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_the_limit(path: pathlib.Path) -> None:
    lines = _lines(path)
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES}): split it"

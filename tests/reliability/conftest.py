"""Reliability suite options: `pytest tests/reliability --long` runs the full 200-kill power-cut loop
(minutes) instead of the short one CI runs."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="reliability: run the long loops (200 power cuts) instead of the CI-sized ones")


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long", default=False))

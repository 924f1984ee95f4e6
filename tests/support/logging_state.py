"""A fixture for tests that call `setup_logging` with a stream that dies with the test (a pty, capsys):
the process-wide structlog and logging set-up is put back afterwards, so later tests never log into a
closed file."""

from __future__ import annotations

import logging

import pytest
import structlog


@pytest.fixture(autouse=True)
def restore_logging():
    saved = structlog.get_config()
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    structlog.configure(**saved)
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)

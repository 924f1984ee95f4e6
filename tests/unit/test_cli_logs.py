"""Console logs carry ANSI colours only on a terminal, and never with NO_COLOR."""

from __future__ import annotations

import io
import os
import pty

import structlog

from edge.logs import setup_logging
from tests.support.logging_state import restore_logging  # noqa: F401  (autouse fixture)


def _line(stream, monkeypatch, no_color: str | None) -> str:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    setup_logging("demo-0001", fmt="console", stream=stream)
    structlog.get_logger("t").warning("door_lock_on_stop_failed", error="x")
    stream.flush()
    return stream.getvalue() if isinstance(stream, io.StringIO) else ""


def test_console_to_a_file_has_no_ansi_and_names_the_machine(monkeypatch) -> None:
    out = _line(io.StringIO(), monkeypatch, None)
    assert "door_lock_on_stop_failed" in out and "\x1b[" not in out and "demo-0001" in out


def test_console_on_a_terminal_is_coloured_unless_no_color(monkeypatch) -> None:
    for no_color, coloured in ((None, True), ("1", False)):
        master, slave = pty.openpty()
        try:
            with os.fdopen(slave, "w", closefd=True) as tty:
                _line(tty, monkeypatch, no_color)
            data = os.read(master, 65536).decode()
        finally:
            os.close(master)
        assert "door_lock_on_stop_failed" in data and ("\x1b[" in data) is coloured

"""structlog set-up: JSON lines under systemd/journald, a readable console on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog


def setup_logging(machine_id: str, *, level: str = "info", fmt: str = "auto",
                  stream: TextIO | None = None) -> None:
    """Configure structlog once for the process. Every record carries `machine_id`."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    # colours only for a person at a terminal, and never when NO_COLOR is set (https://no-color.org)
    colors = tty and not os.environ.get("NO_COLOR")
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=colors))
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=stream, format="%(name)s %(message)s")
    # pymodbus logs every timeout at ERROR and every frame at DEBUG; the hub counts and logs state changes
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _machine(machine_id),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def _machine(machine_id: str) -> Any:
    def add(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("machine_id", machine_id)
        return event

    return add

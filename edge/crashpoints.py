"""Named crash points for the reliability harness.

`VENDEDGE_CRASH_AT=vend.after_journal` (optionally `:N` for the N-th pass) makes the process die with
os._exit at that point — the nearest thing to a power cut a test can produce. Unset: one dict lookup.
A harness that must first bring the machine into a state (restock, sync) can arm a point later with
`arm("name[:N]")`; the pass count restarts at that moment. tests/reliability runs every point.
"""

from __future__ import annotations

import os
from typing import Any

POINTS = (
    "vend.after_journal", "vend.after_send", "vend.before_result", "ledger.mid_transaction",
    "sync.mid_ack", "config.mid_apply", "migration.mid", "session.after_unlock", "session.before_order",
)
EXIT_CODE = 137  # what a SIGKILL'd process reports (128 + 9), so harnesses treat both alike
_armed: dict[str, Any] = {"name": "", "nth": 1, "n": 0}


def arm(spec: str) -> None:
    """Arm `name[:N]` (die on the N-th pass, default 1); an empty spec disarms. Unknown names are errors."""
    name, _, nth = spec.partition(":")
    if name and name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(POINTS)}")
    _armed.update(name=name, nth=int(nth or 1), n=0)


def crash_point(name: str) -> None:
    """Die here, now, without cleanup, when the environment asks for this point."""
    if name != _armed["name"]:
        return
    _armed["n"] += 1
    if _armed["n"] >= _armed["nth"]:
        os._exit(EXIT_CODE)


arm(os.environ.get("VENDEDGE_CRASH_AT", ""))

"""Named crash points for the reliability harness.

`VENDEDGE_CRASH_AT=vend.after_journal` (optionally `:N` for the N-th pass) makes the process die with
os._exit at that point — the nearest thing to a power cut a test can produce. Unset: one dict lookup.
"""

from __future__ import annotations

import os

POINTS = (
    "vend.after_journal", "vend.after_send", "vend.before_result", "ledger.mid_transaction",
    "sync.mid_ack", "config.mid_apply", "migration.mid", "session.after_unlock", "session.before_order",
)
_spec = os.environ.get("VENDEDGE_CRASH_AT", "")
_name, _, _nth = _spec.partition(":")
_count = {"n": 0}


def crash_point(name: str) -> None:
    """Die here, now, without cleanup, when the environment asks for this point."""
    if not _name or name != _name:
        return
    _count["n"] += 1
    if _count["n"] >= int(_nth or 1):
        os._exit(137)

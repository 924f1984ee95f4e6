"""A technician's decision on a take-and-go basket the machine could not decide (review queue).

The machine never charges a doubtful basket: its order waits in ``needs_review`` with the best guess as
lines. `decide` settles it in one transaction: the lines (the guess, or the corrected basket), the final
order state queued for the cloud (``completed`` is what the cloud charges; ``void`` charges nothing),
the stock taken from the lanes, the session's final state and an audit record. A basket is decided
once: a second decision (another technician, a reload) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from edge.core.errors import SaleRefused
from edge.ledger import repo
from edge.ledger.db import LedgerDB, Tx
from edge.ledger.users import audit


async def waiting(db: LedgerDB, session_id: str) -> dict[str, Any] | None:
    """The basket waiting for a decision: {session_id, limit_amount, currency, lines}, or None."""
    row = await db.fetchone(
        "SELECT s.session_id, s.limit_amount, s.currency FROM sessions s JOIN orders o "
        "ON o.order_id = s.session_id WHERE s.session_id=? AND s.state='needs_review' "
        "AND o.status='needs_review'",
        (session_id,),
    )
    if row is None:
        return None
    lines = await db.fetchall(
        "SELECT sku_id, slot_id, qty, unit_price FROM order_lines WHERE order_id=? ORDER BY line_no",
        (session_id,),
    )
    return {**dict(row), "lines": [dict(ln) for ln in lines]}


async def decide(
    tx: Tx, session_id: str, *, action: str, lines: Sequence[Mapping[str, Any]], actor: str, note: str = ""
) -> dict[str, Any]:
    """Settle one basket (`action` approve | correct | void; `lines` empty for void). Returns the order."""
    row = await tx.fetchone("SELECT state, data FROM sessions WHERE session_id=?", (session_id,))
    order = await tx.fetchone("SELECT status FROM orders WHERE order_id=?", (session_id,))
    if row is None or order is None:
        raise SaleRefused("not_found", f"no basket {session_id!r} in the review queue")
    if row["state"] != "needs_review" or order["status"] != "needs_review":
        raise SaleRefused("already_decided", f"basket {session_id} is {row['state']}: decided before")
    status = "void" if action == "void" else "completed"
    await tx.execute("DELETE FROM order_lines WHERE order_id=?", (session_id,))
    for i, ln in enumerate(lines):
        await tx.execute(
            "INSERT INTO order_lines(order_id, line_no, sku_id, slot_id, qty, unit_price, status, price_rule) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (session_id, i, ln["sku_id"], ln["slot_id"], ln["qty"], ln["unit_price"], status,
             ln.get("price_rule", "")),
        )
    total = sum(int(ln["qty"]) * int(ln["unit_price"]) for ln in lines)
    for ln in lines:
        await repo.change_stock(tx, ln["slot_id"], -int(ln["qty"]), "takeandgo_review", order_id=session_id)
    doc = await repo.finish_order(tx, session_id, status, total=total, reason=f"review_{action}")
    data = json.loads(row["data"])
    data["review"] = {"action": action, "actor": actor, "at": tx.now, "note": note[:200]}
    await tx.execute(
        "UPDATE sessions SET state=?, data=?, updated_at=? WHERE session_id=?",
        ("charged" if status == "completed" else "void", json.dumps(data, default=str), tx.now, session_id),
    )
    basket = {ln["sku_id"]: ln["qty"] for ln in lines}
    await audit(
        tx, actor, "review_decide", session_id=session_id, decision=action, basket=basket, total=total
    )
    return doc

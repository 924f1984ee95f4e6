"""Payment sessions (card readers): one row per authorisation attempt, written before each bus step.

States (docs/protocols/mdb.md): ``requested`` (the VEND REQUEST may have left) → ``approved`` (the
reader approved; only now may a motor run) → ``capturing`` / ``refunding`` (VEND SUCCESS / FAILURE
about to leave) → ``captured`` / ``refunded``. Ends without money moving: ``denied``, ``cancelled``
(no decision in time), ``voided`` (the reader reset before we settled). ``capture_unknown``: the
reader reset between our VEND SUCCESS and its answer; the processor's record decides.
The vend that a payment paid for carries ``payment_ref = '<method>:<payment_id>'`` on its order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.ledger.db import LedgerDB, Tx

OPEN_STATES = ("requested", "approved", "capturing", "refunding")


@dataclass(frozen=True)
class PaymentRow:
    payment_id: str
    method: str
    slot_id: str
    item: int
    amount: int
    currency: str
    scaled: int
    state: str
    error: str

    @property
    def ref(self) -> str:
        return f"{self.method}:{self.payment_id}"


def _row(r: Any) -> PaymentRow:
    return PaymentRow(
        r["payment_id"],
        r["method"],
        r["slot_id"],
        r["item"],
        r["amount"],
        r["currency"],
        r["scaled"],
        r["state"],
        r["error"],
    )


async def open_payment(
    tx: Tx, payment_id: str, *, method: str, slot_id: str, item: int, amount: int, currency: str, scaled: int
) -> None:
    """Journal an authorisation attempt (state ``requested``) before its VEND REQUEST leaves."""
    await tx.execute(
        "INSERT INTO payment_sessions(payment_id, method, slot_id, item, amount, currency, scaled, state,"
        " created_at, updated_at, seq) VALUES (?,?,?,?,?,?,?,'requested',?,?,?)",
        (payment_id, method, slot_id, item, amount, currency, scaled, tx.now, tx.now, tx.next_seq()),
    )


async def set_payment_state(tx: Tx, payment_id: str, state: str, *, error: str = "") -> PaymentRow:
    """Move a payment on; final states are also an event for the cloud."""
    await tx.execute(
        "UPDATE payment_sessions SET state=?, error=?, updated_at=? WHERE payment_id=?",
        (state, error, tx.now, payment_id),
    )
    row = await tx.fetchone("SELECT * FROM payment_sessions WHERE payment_id=?", (payment_id,))
    if row is None:
        raise KeyError(payment_id)
    payment = _row(row)
    if state not in OPEN_STATES:
        await tx.event(
            f"payment_{state}",
            {
                "payment_id": payment_id,
                "method": payment.method,
                "slot_id": payment.slot_id,
                "amount": payment.amount,
                "currency": payment.currency,
                "error": error,
            },
        )
    return payment


async def payment(db: LedgerDB | Tx, payment_id: str) -> PaymentRow | None:
    row = await db.fetchone("SELECT * FROM payment_sessions WHERE payment_id=?", (payment_id,))
    return _row(row) if row else None


async def open_payments(db: LedgerDB, method: str) -> list[PaymentRow]:
    marks = ",".join("?" * len(OPEN_STATES))
    rows = await db.fetchall(
        f"SELECT * FROM payment_sessions WHERE method=? AND state IN ({marks}) ORDER BY seq",
        (method, *OPEN_STATES),
    )
    return [_row(r) for r in rows]


async def vend_outcome(db: LedgerDB, ref: str) -> str:
    """What became of the vend paid with ``ref``: 'dropped', 'failed', 'unconfirmed' (needs a technician's
    count: nobody knows), 'unknown' (the vend journal is not settled yet) or 'none' (no vend)."""
    rows = await db.fetchall("SELECT status FROM orders WHERE payment_ref=? AND kind='vend'", (ref,))
    statuses = {r["status"] for r in rows}
    if not statuses:
        return "none"
    if "completed" in statuses:
        return "dropped"
    if statuses == {"failed"}:
        return "failed"
    if "needs_count" in statuses:
        return "unconfirmed"
    return "unknown"


async def payment_totals(db: LedgerDB, method: str) -> dict[str, int]:
    """Count and sum (minor units) per state, e.g. {'captured': 3, 'captured_amount': 540, ...}."""
    rows = await db.fetchall(
        "SELECT state, COUNT(*) AS n, SUM(amount) AS total FROM payment_sessions "
        "WHERE method=? GROUP BY state",
        (method,),
    )
    out: dict[str, int] = {}
    for r in rows:
        out[r["state"]] = r["n"]
        out[f"{r['state']}_amount"] = r["total"] or 0
    return out


async def disagreements(db: LedgerDB, method: str) -> dict[str, list[str]]:
    """Payments and orders that break the two rules (each list should be empty; the card demo checks):
    ``captured_without_drop``: a capture whose order did not complete; ``dropped_without_approval``: a
    completed card order with no approved payment (a count that later found the item gone after an
    unconfirmed drop was refunded is a free vend, not a breach); ``mispriced``: the card paid another
    amount than the order charged."""
    ref = f"'{method}:' || p.payment_id"
    captured = await db.fetchall(
        f"SELECT p.payment_id FROM payment_sessions p LEFT JOIN orders o ON o.payment_ref = {ref} "
        "WHERE p.method = ? AND p.state = 'captured' AND (o.status IS NULL OR o.status != 'completed')",
        (method,),
    )
    dropped = await db.fetchall(
        f"SELECT o.order_id FROM orders o LEFT JOIN payment_sessions p ON o.payment_ref = {ref} "
        "WHERE o.kind = 'vend' AND o.status = 'completed' AND o.payment_ref LIKE ? "
        "AND (p.state IS NULL OR p.state NOT IN ('captured', 'voided', 'capture_unknown')) "
        "AND NOT (o.reason = 'counted' AND p.error = 'drop_unconfirmed')",
        (f"{method}:%",),
    )
    mispriced = await db.fetchall(
        f"SELECT p.payment_id FROM payment_sessions p JOIN orders o ON o.payment_ref = {ref} "
        "WHERE p.method = ? AND p.amount != o.total_amount",
        (method,),
    )
    return {
        "captured_without_drop": [r[0] for r in captured],
        "dropped_without_approval": [r[0] for r in dropped],
        "mispriced": [r[0] for r in mispriced],
    }

"""Whether a spiral sale may start: pure checks over a snapshot read before the sale's transaction.

The vend flow (``edge/services/vend.py``) asks ``check_machine`` before it talks to the board, then
``check_slot`` on the slot as read outside any transaction, then the plant's guards (food safety,
mains) and the price; inside ``BEGIN IMMEDIATE`` it re-checks only what can change under it — the
slot's stock row — with ``check_stock``. The first refusal found is the one the customer sees, in the
order of the functions below.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.core.errors import SaleRefused


@dataclass(frozen=True)
class MachineState:
    """What the whole machine says about selling now."""

    accepting: bool  # False while the daemon stops
    unreconciled: int  # journal entries whose outcome is not known yet
    board_connected: bool  # link up and handshaken


@dataclass(frozen=True)
class SlotStock:
    """The slot's stock row as the guard needs it."""

    count: int
    disabled: bool
    disabled_reason: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why the sale is refused: ``reason`` is the stable code, ``detail`` the text for people."""

    reason: str
    detail: str

    def error(self) -> SaleRefused:
        return SaleRefused(self.reason, self.detail)


def check_machine(m: MachineState) -> Refusal | None:
    """Stopping, an unsettled earlier vend, or no board: no sale at all."""
    if not m.accepting:
        return Refusal("stopping", "the machine is shutting down")
    if m.unreconciled:
        return Refusal("reconciling", "an earlier vend's outcome is not known yet")
    if not m.board_connected:
        return Refusal("board_offline", "the vend board is not connected")
    return None


def check_stock(slot_id: str, stock: SlotStock | None) -> Refusal | None:
    """The part that can change between the snapshot and the transaction: re-checked inside it."""
    if stock is None:
        return Refusal("unknown_slot", slot_id)
    if stock.disabled:
        return Refusal("slot_disabled", stock.disabled_reason or "")
    if stock.count <= 0:
        return Refusal("sold_out", slot_id)
    return None


def check_slot(slot_id: str, stock: SlotStock | None, spiral: bool) -> Refusal | None:
    """The slot: known, enabled, not empty, and a spiral of the planogram (not a take-and-go lane).

    ``spiral``: the current planogram has ``slot_id`` and it sits on no shelf."""
    refusal = check_stock(slot_id, stock)
    if refusal is None and not spiral:
        return Refusal("unknown_slot", f"{slot_id} is not a spiral slot")
    return refusal


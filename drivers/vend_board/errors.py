"""The vend board driver's own errors (all DeviceErrors; see docs/protocols/vend-board.md)."""

from __future__ import annotations

from drivers.errors import DeviceError, DeviceFault, ProtocolError
from drivers.vend_board.models import VendResult


class VendRefused(DeviceFault):
    """The board NAKed a command (``reason``: 'bad_slot', 'busy', 'bad_frame', 'stale_boot').

    ``definitive``: the NAK answered the only copy sent, so the board has certainly not run this seq.
    With more than one copy out the NAK may answer an older copy while a newer one was accepted.
    """

    def __init__(self, reason: str, message: str, *, definitive: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.definitive = definitive


class BoardRebooted(DeviceError):
    """The board answered from another boot id and does not know the vend: its outcome is unknown."""


class VendInterrupted(DeviceError):
    """The board says the vend was under way when it lost power; whether the item fell is unknown."""


class SlotMismatch(ProtocolError):
    """The board reports a vend from another slot than the one asked for (miswired or lying)."""

    def __init__(self, asked: str, result: VendResult) -> None:
        super().__init__(f"asked to vend {asked}, the board reports {result.slot}")
        self.asked = asked
        self.result = result

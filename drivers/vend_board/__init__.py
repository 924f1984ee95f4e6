"""Driver for the spiral/motor vend board: pure codec, byte transport, session (``VendBoard``)."""

from drivers.vend_board.board import VendBoard
from drivers.vend_board.errors import BoardRebooted, SlotMismatch, VendInterrupted, VendRefused
from drivers.vend_board.models import (
    BoardInfo,
    BoardStatus,
    DoorState,
    MotorCurrent,
    VendOutcome,
    VendQuery,
    VendResult,
)

__all__ = ["BoardInfo", "BoardRebooted", "BoardStatus", "DoorState", "MotorCurrent", "SlotMismatch", "VendBoard",
           "VendInterrupted", "VendOutcome", "VendQuery", "VendRefused", "VendResult"]

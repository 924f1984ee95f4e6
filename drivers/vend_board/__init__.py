"""Driver for the spiral/motor vend board: pure codec, byte transport, session (``VendBoard``)."""

from drivers.vend_board.board import VendBoard, VendRefused
from drivers.vend_board.models import BoardStatus, DoorState, VendOutcome, VendQuery, VendResult

__all__ = ["BoardStatus", "DoorState", "VendBoard", "VendOutcome", "VendQuery", "VendRefused", "VendResult"]

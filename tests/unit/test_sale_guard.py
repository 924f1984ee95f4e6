"""The pure sale guard (edge/core/sale_guard.py): every combination of its inputs, and the order of
the refusals a customer sees."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from edge.core.errors import SaleRefused
from edge.core.sale_guard import MachineState, Refusal, SlotStock, check_machine, check_slot, check_stock

machines = st.builds(MachineState, st.booleans(), st.integers(0, 5), st.booleans())
stocks = st.none() | st.builds(SlotStock, st.integers(-3, 50), st.booleans(), st.none() | st.text(max_size=20))
slot_ids = st.text(min_size=1, max_size=8)


def _expected_machine(m: MachineState) -> str | None:
    for failed, reason in ((not m.accepting, "stopping"), (m.unreconciled > 0, "reconciling"),
                           (not m.board_connected, "board_offline")):
        if failed:
            return reason
    return None


def _expected_slot(stock: SlotStock | None, spiral: bool) -> str | None:
    for failed, reason in ((stock is None, "unknown_slot"), (stock is not None and stock.disabled, "slot_disabled"),
                           (stock is not None and stock.count <= 0, "sold_out"), (not spiral, "unknown_slot")):
        if failed:
            return reason
    return None


@given(machines)
def test_the_machine_check_refuses_with_the_first_failing_condition(m: MachineState) -> None:
    refusal = check_machine(m)
    assert (refusal.reason if refusal else None) == _expected_machine(m)


@given(slot_ids, stocks, st.booleans())
def test_the_slot_check_refuses_with_the_first_failing_condition(slot: str, stock: SlotStock | None,
                                                                 spiral: bool) -> None:
    refusal = check_slot(slot, stock, spiral)
    assert (refusal.reason if refusal else None) == _expected_slot(stock, spiral)
    if refusal is not None and refusal.reason in ("unknown_slot", "sold_out"):
        assert slot in refusal.detail  # the customer's screen says which slot


@given(slot_ids, stocks, st.booleans())
def test_the_check_in_the_transaction_never_refuses_what_the_snapshot_allowed_unless_the_row_changed(
        slot: str, stock: SlotStock | None, spiral: bool) -> None:
    """Same row, same answer: re-checking the stock inside the transaction only adds the row's changes."""
    if check_slot(slot, stock, spiral) is None:
        assert check_stock(slot, stock) is None
    stock_refusal = check_stock(slot, stock)
    if stock_refusal is not None:
        assert check_slot(slot, stock, spiral) == stock_refusal


def test_every_combination_of_the_machine_flags() -> None:
    for accepting, unreconciled, connected in itertools.product((True, False), (0, 1), (True, False)):
        m = MachineState(accepting, unreconciled, connected)
        assert (check_machine(m) is None) == (accepting and not unreconciled and connected)


def test_a_disabled_slot_says_why_and_an_empty_reason_is_no_crash() -> None:
    assert check_stock("A1", SlotStock(3, True, "jam x3")) == Refusal("slot_disabled", "jam x3")
    assert check_stock("A1", SlotStock(3, True, None)) == Refusal("slot_disabled", "")
    assert check_slot("A1", SlotStock(3, False), spiral=False) == Refusal("unknown_slot", "A1 is not a spiral slot")


def test_a_refusal_is_the_sale_error_the_callers_know() -> None:
    err = Refusal("sold_out", "A1").error()
    assert isinstance(err, SaleRefused) and (err.reason, err.detail) == ("sold_out", "A1")

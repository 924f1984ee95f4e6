"""Sale guards run before the sale's transaction, and the stock row is checked again inside it.

The real daemon, the simulated board on a pty, a real SQLite file. A plant guard here writes to the
ledger: inside ``BEGIN IMMEDIATE`` (the old place) that would wait on the ledger's own lock for ever.
"""

from __future__ import annotations

import pytest

from edge.core.errors import SaleRefused
from edge.ledger import repo
from tests.support.rigs.vend import start_rig

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def rig(tmp_path):
    r = await start_rig(str(tmp_path), speed=200.0)
    yield r
    await r.stop()


async def _orders(rig) -> int:
    row = await rig.daemon.db.fetchone("SELECT COUNT(*) AS n FROM orders")
    return int(row["n"])


async def test_a_count_between_the_checks_and_the_transaction_refuses_the_sale(rig):
    """The snapshot said 8 in A1; a technician's count of 0 lands before the transaction: sold out."""
    db, vend = rig.daemon.db, rig.daemon.machine.vend
    seen: list[str] = []

    async def counted_empty_meanwhile(slot_id: str, sku_id: str) -> None:
        seen.append(slot_id)
        async with db.tx() as tx:
            row = await repo.stock_row(tx, slot_id)
            assert row is not None
            await repo.change_stock(tx, slot_id, -row.count, "count", actor="tech")

    vend.guards.append(counted_empty_meanwhile)
    with pytest.raises(SaleRefused) as refused:
        await rig.daemon.machine.sell("A1", "card:1")
    assert refused.value.reason == "sold_out" and seen == ["A1"]
    assert await _orders(rig) == 0 and rig.sim.total_dispensed == 0
    assert (await repo.stock(db))["A1"].count == 0


async def test_a_slot_disabled_meanwhile_is_refused_as_disabled(rig):
    db, vend = rig.daemon.db, rig.daemon.machine.vend

    async def disabled_meanwhile(slot_id: str, sku_id: str) -> None:
        async with db.tx() as tx:
            await repo.set_slot_disabled(tx, slot_id, True, "door of the spiral broken")

    vend.guards.append(disabled_meanwhile)
    with pytest.raises(SaleRefused) as refused:
        await rig.daemon.machine.sell("B2", "card:1")
    assert (refused.value.reason, refused.value.detail) == ("slot_disabled", "door of the spiral broken")
    assert await _orders(rig) == 0 and rig.sim.total_dispensed == 0


async def test_guards_that_pass_let_the_sale_through_and_refusals_come_first(rig):
    vend = rig.daemon.machine.vend
    calls: list[tuple[str, str]] = []

    async def watching(slot_id: str, sku_id: str) -> None:
        calls.append((slot_id, sku_id))

    vend.guards.append(watching)
    order = await rig.daemon.machine.sell("A1", "card:1")
    assert order["status"] == "completed" and rig.sim.total_dispensed == 1
    sku = (await repo.current_planogram(rig.daemon.db)).sku_for_slot("A1").sku_id
    assert calls == [("A1", sku)]
    await rig.daemon.machine.restock("C3", 0, actor="tech")
    with pytest.raises(SaleRefused) as refused:  # sold out is found before any guard is asked
        await rig.daemon.machine.sell("C3", "card:2")
    assert refused.value.reason == "sold_out" and calls == [("A1", sku)]

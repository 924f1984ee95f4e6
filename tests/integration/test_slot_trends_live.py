"""Spiral run-time trends on the live daemon: the real VendService and the vend board simulator on a
pty; the simulated motor starts to turn slower (a binding spiral) and "service soon" is raised for that
slot only, before any jam; servicing clears it."""

from __future__ import annotations

import pytest

from edge.ledger import repo
from tests.integration.test_fridge_services import rig  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(60)


async def sell(r, slot: str, n: int) -> None:
    machine = r.daemon.machine
    for i in range(n):
        await machine.restock(slot, None, actor="test")
        r.board_sim.stock[slot] = 5  # the technician filled the spiral too
        order = await machine.sell(slot, f"card:{slot}-{i}")
        assert order["status"] == "completed", (order["reason"], i)
    await r.daemon.slot_trends.drain()


async def active(r) -> set[str]:
    return {a["alarm_key"] for a in await repo.active_alarms(r.daemon.db) if a["kind"] == "service_soon"}


async def test_a_slowing_spiral_is_flagged_before_it_jams(rig):  # noqa: F811
    await sell(rig, "A1", 22)  # learns A1's healthy run time (~1200 ms)
    await sell(rig, "A2", 22)
    assert await active(rig) == set()
    rig.board_sim.motor_ms = 1700  # the board now needs ~40 % longer to turn the spiral once
    await sell(rig, "A1", 10)
    assert await active(rig) == {"service_soon:slot:A1"}
    assert rig.board_sim.counters["jams"] == 0
    await rig.daemon.slot_trends.serviced("A1", "tech-anna")
    assert await active(rig) == set()

"""Predictive maintenance on the live daemon: the simulated fridge controller over RTU on a pty,
a refrigerant leak injected in the physics; the compressor's runs lengthen and "service soon" is
raised while the cabinet still holds its band. Simulated time runs 2000x; the watch's learning
and windows are shortened so the test takes seconds."""

from __future__ import annotations

import pytest

from edge.core.maintenance import CoolingConfig, CoolingWatch
from edge.ledger import repo
from tests.integration.test_fridge_services import rig  # noqa: F401  (the shared fixture)
from tests.support.rigs.fridge import HOUR

pytestmark = pytest.mark.timeout(60)
KEY = "service_soon:cooling:fridge"


async def test_a_leak_raises_service_soon_before_the_cabinet_warms(rig):  # noqa: F811
    m = rig.plant.maintenance
    assert m is not None
    m.watch = CoolingWatch("fridge", CoolingConfig(learn_s=3 * HOUR, window_runs=3, hold_s=0.5 * HOUR))
    t0 = rig.sim_now()
    await rig.until(t0 + 7 * HOUR)  # healthy: learns, judges, stays quiet
    assert not m.watch.active and m.watch.ratio("normal") is not None
    assert KEY not in {a["alarm_key"] for a in await repo.active_alarms(rig.daemon.db)}
    rig.sim.fridge.refrigerant_charge = 0.35  # a leak: a third of the cooling left
    leak_at = rig.sim_now()
    temp = rig.plant.temperature
    while not m.watch.active and rig.sim_now() < leak_at + 6 * HOUR:
        await rig.until(rig.sim_now() + 600)
    assert m.watch.active, m.status()
    await m.drain()  # the watch turns active before the service's transaction writes the alarm
    alarms = {a["alarm_key"]: a for a in await repo.active_alarms(rig.daemon.db)}
    assert KEY in alarms and alarms[KEY]["kind"] == "service_soon"
    assert not temp.safety.locked  # warned while the food was still safe
    await m.serviced("tech-anna")
    assert KEY not in {a["alarm_key"] for a in await repo.active_alarms(rig.daemon.db)}

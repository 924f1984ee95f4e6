"""Eco schedule on the live machine: the real TemperatureService, the simulated controller and I/O
module over RTU on a pty (2000x). Idle by day → eco: cabinet lights off and fan with compressor in the
simulator's physics, setpoint raised only as far as the food-safety cap allows; a door opening wakes it."""

from __future__ import annotations

import dataclasses

import pytest

from edge.services.eco import EcoService, eco_config
from tests.integration.test_fridge_services import rig  # noqa: F401  (the shared fixture)
from tests.support.rigs.fridge import HOUR
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(60)


async def test_idle_machine_goes_eco_and_a_door_opening_wakes_it(rig):  # noqa: F811
    temp, plant = rig.plant.temperature, rig.plant
    cfg = dataclasses.replace(
        eco_config(rig.daemon.config.temperature), normal_setpoint_c=3.0, idle_after_s=1800, wake_s=600
    )
    assert cfg.eco_setpoint_c == pytest.approx(3.7)  # 3 + 1 capped: cut-in 4.7 stays 0.3 below 5 °C
    await temp.set_setpoint(3.0, actor="test")
    svc = EcoService(temp, cfg, io=plant.devices["bus0.io"], door=plant.door, clock=rig.clock)
    rig.daemon.supervisor.spawn("eco.test", svc.run)
    t0 = rig.sim_now()
    await rig.until(t0 + 0.25 * HOUR)
    assert svc.mode is not None and not svc.mode.eco  # start counts as activity
    await wait_for(lambda: svc.mode is not None and svc.mode.eco, timeout_s=10)
    assert svc.mode.reason == "idle"
    await wait_for(lambda: rig.sim.fridge.lights_on is False and rig.sim.fridge.fan_eco is True)
    assert rig.sim.fridge.setpoint_c == pytest.approx(3.7) and temp.setpoint == pytest.approx(3.7)

    await plant.door.unlock(60_000, "test", actor="pytest")
    assert rig.sim.open_door()
    await wait_for(lambda: not svc.mode.eco)
    assert svc.mode.reason in ("door_activity", "cabinet_warm")
    await wait_for(lambda: rig.sim.fridge.lights_on is True and rig.sim.fridge.fan_eco is False)
    assert rig.sim.fridge.setpoint_c == pytest.approx(3.0)
    rig.sim.close_door()

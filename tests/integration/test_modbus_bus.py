"""The Modbus hub against the simulated plant over a real pty (RTU, socat) and over TCP."""

import asyncio
import shutil

import pytest

from drivers.errors import DeviceFault
from drivers.modbus import ModbusHub, RegisterMap
from hw_sim.modbus import SimModbusPlant
from hw_sim.physics import FridgePhysics
from hw_sim.world import FridgeWorld, load_demo_planogram
from tests.support.waits import wait_for

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat")]
UNITS = {"fridge_controller": 1, "weight_shelf": 2, "io_module": 3}


async def make_bus(tmp_path, *, speed=600.0, poll=0.1, tcp=False, **dev_kw):
    world = FridgeWorld(load_demo_planogram())
    plant = SimModbusPlant(world, speed=speed, seed=1)
    if tcp:
        port = await plant.serve_tcp(0)
        hub = ModbusHub("tcp0", host="127.0.0.1", tcp_port=port, timeout_s=0.2)
    else:
        link = await plant.serve_rtu(str(tmp_path / "ttyMB0"))
        hub = ModbusHub("bus0", serial_port=link, timeout_s=0.1)
    devs = {n: hub.add_device(n, u, RegisterMap.builtin(n), poll_interval_s=poll, **dev_kw) for n, u in UNITS.items()}
    await hub.start()
    await wait_for(lambda: all(d.online for d in devs.values()))
    return world, plant, hub, devs


@pytest.fixture
async def bus(tmp_path):
    made = []

    async def factory(**kw):
        parts = await make_bus(tmp_path, **kw)
        made.append(parts)
        return parts
    yield factory
    for _, plant, hub, _ in made:
        await hub.stop()
        await plant.close()


async def test_thermostat_regulation_is_visible_over_the_bus(bus):
    _, plant, hub, devs = await bus(speed=1500.0, poll=0.05)
    seen = []
    devs["fridge_controller"].subscribe(lambda d: seen.append((d.values["cabinet_temp_c"], d.values["compressor_on"])))
    await wait_for(lambda: {on for _, on in seen} == {True, False}, timeout_s=8.0)
    temps = [t for t, _ in seen]
    assert 2.0 < min(temps) and max(temps) < 6.0
    assert hub.task_name == "modbus.poll.bus0"


async def test_door_refused_while_locked_then_opening_warms_the_cabinet(bus):
    _, plant, _, devs = await bus()
    io, fridge = devs["io_module"], devs["fridge_controller"]
    assert io.values["lock_coil"] is True and plant.open_door() is False
    await io.write("lock_coil", False)
    assert plant.io.locked is False and plant.open_door() is True
    await wait_for(lambda: io.values["door_closed"] is False)
    before = fridge.values["cabinet_temp_c"]
    await wait_for(lambda: fridge.values["cabinet_temp_c"] > before + 1.5, timeout_s=5.0)


async def test_setpoint_write_is_verified_by_read_back(bus):
    _, plant, _, devs = await bus()
    fridge = devs["fridge_controller"]
    await fridge.write("setpoint_c", 6.5)
    assert plant.fridge.setpoint_c == 6.5 and fridge.values["setpoint_c"] == 6.5
    assert (await fridge.read_now())["setpoint_c"] == 6.5
    assert fridge.counters["ok"] <= fridge.counters["polls"]  # an out-of-band read is a poll too
    with pytest.raises(ValueError, match="outside allowed range"):
        await fridge.write("setpoint_c", 30.0)
    plant.stick_sensor("setpoint_c")  # firmware ignores the write: read-back shows the old value
    with pytest.raises(DeviceFault, match="wrote 3.0 but read back 6.5"):
        await fridge.write("setpoint_c", 3.0)


async def test_silent_slave_goes_offline_alone_and_comes_back(bus):
    _, plant, hub, devs = await bus(poll=0.1, offline_after=3, max_backoff_s=0.8)
    changes = []
    devs["weight_shelf"].subscribe(lambda d: changes.append(d.online) if not changes or changes[-1] != d.online else None)
    plant.silence(UNITS["weight_shelf"], seconds=3.0)
    await wait_for(lambda: not devs["weight_shelf"].online, timeout_s=3.0)
    others = ("fridge_controller", "io_module")
    ok0 = {}
    for name in others:
        devs[name]._intervals.clear()
        ok0[name] = devs[name].counters["ok"]
    # ten polls of each other device while the shelf is silent (about 1 s)
    await wait_for(lambda: all(devs[n].counters["ok"] - ok0[n] >= 10 for n in others), 5.0, what="10 polls each")
    for name in others:
        d = devs[name]
        # polled every 0.1 s: a bus that waited out the silent slave's 0.1 s timeout each round would show
        # >= 0.2 s; the bound leaves room for a loaded machine
        assert d.online and d.poll_period_s_measured is not None and d.poll_period_s_measured < 0.17, name
    await wait_for(lambda: devs["weight_shelf"].online, timeout_s=4.0)
    assert changes == [True, False, True]
    assert devs["weight_shelf"].counters["timeouts"] >= 3 and hub.counters["timeouts"] >= 3


async def test_unplugged_adapter_takes_devices_offline_and_bus_recovers(bus):
    _, plant, hub, devs = await bus()
    await plant.unplug()
    await wait_for(lambda: not hub.connected and not any(d.online for d in devs.values()))
    await asyncio.sleep(0.3)  # the scenario: the cable stays out while the hub tries to reconnect
    await plant.replug()
    await wait_for(lambda: hub.connected and all(d.online for d in devs.values()), timeout_s=8.0)
    assert hub.counters["connects"] >= 2 and hub.counters["disconnects"] >= 1


async def test_taking_an_item_shows_as_a_stable_weight_drop(bus):
    world, _, _, devs = await bus()
    shelf = devs["weight_shelf"]
    lane = world.lanes_on_shelf(0)[0]
    await wait_for(lambda: shelf.values["shelf0_stable"])
    before = shelf.values["shelf0_grams"]
    assert before == pytest.approx(world.shelf_grams(0), abs=6.0)
    sku = world.take(lane.slot_id)
    want = before - world.sku_weight[sku]
    await wait_for(lambda: shelf.values["shelf0_stable"] and abs(shelf.values["shelf0_grams"] - want) < 6.0)


async def test_crc_garbage_and_exception_replies_are_typed_and_counted(bus):
    _, plant, hub, devs = await bus()
    plant.crc_garbage(UNITS["fridge_controller"], 1)
    await wait_for(lambda: hub.counters["crc_errors"] >= 1)
    assert devs["fridge_controller"].online  # one garbled reply is retried, not an outage
    plant.exception(UNITS["io_module"], code=4, n=50)
    with pytest.raises(DeviceFault, match="exception code 4"):
        await devs["io_module"].read_now()
    await wait_for(lambda: not devs["io_module"].online)
    assert devs["io_module"].last_error and "exception code 4" in devs["io_module"].last_error


async def test_tcp_gateway_reads_and_writes(bus):
    _, plant, hub, devs = await bus(tcp=True)
    await devs["io_module"].write("light", True)
    assert plant.io.light is True
    await devs["weight_shelf"].write("tare_shelf1", True)
    assert abs((await devs["weight_shelf"].read_now())["shelf1_grams"]) < 3.0
    assert hub.counters["ok"] > 0 and hub.counters["timeouts"] == 0


async def test_a_reply_catches_up_a_late_physics_tick(bus):
    """A loaded event loop runs the tick task late; a read must still show the plant as it is now
    (a real controller's registers are current), not as the last tick left it."""
    _, plant, _, devs = await bus(tcp=True, speed=1.0)
    plant._tick_task.cancel()  # the tick task stalls for good
    before = plant.fridge.time_s
    plant.clock.advance(1800.0)  # half an hour of plant time passes without a tick
    await devs["fridge_controller"].read_now()
    assert plant.fridge.time_s - before >= 1800.0
    fresh = plant.fridge.time_s
    await devs["fridge_controller"].read_now()  # on time again: no step beyond the clock
    assert plant.fridge.time_s - fresh < 1.0


async def test_the_fridge_controller_shows_its_state_at_the_instant_it_is_read(bus):
    """At 2000x one 50 ms tick is 100 simulated seconds, as long as half a compressor run. A real
    controller's registers follow its thermostat continuously, so a read steps the fridge's physics
    to the clock's now even between ticks; a compressor edge is seen when it happens."""
    _, plant, _, devs = await bus(tcp=True, speed=2000.0)
    plant._tick_task.cancel()
    plant.tick()
    ticked, physics_at = plant.clock.now(), plant.fridge.time_s
    plant.clock.advance(60.0)  # a minute of plant time since the last tick, under one tick period
    since = plant.clock.now() - ticked
    await devs["fridge_controller"].read_now()
    assert plant.fridge.time_s - physics_at >= since - FridgePhysics.SUBSTEP_S

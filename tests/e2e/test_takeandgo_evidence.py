"""Take-and-go with a stalled evidence disk: the evidence pool is stuck, the customer is not.

Real daemon, simulated plant, rendered cameras, the real recognizer. The evidence pool's one thread is
held by a write that does not return (a dying SD card); the door must still unlock, the order still
be charged, and the evidence land once the disk answers again.
"""

from __future__ import annotations

import random
import threading

import pytest

from tests.support.rigs.takeandgo import shop, start_takeandgo_rig, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def rig(tmp_path):
    r = await start_takeandgo_rig(str(tmp_path), seed=3)
    yield r
    await r.stop()


async def test_a_stalled_evidence_disk_holds_neither_the_door_nor_the_order(rig):
    store = rig.service.evidence
    disk = threading.Event()
    stuck = store.executor.submit(disk.wait, 60.0)  # every evidence write now queues behind this one
    try:
        row, _ = await shop(rig, random.Random(0), session_id="s-stalled", linger_s=1.0, actions=[("take", "H5")])
        assert row["state"] == "charged"
        order = await rig.daemon.db.fetchone("SELECT status FROM orders WHERE order_id='s-stalled'")
        assert order["status"] == "completed"
        assert store.files("s-stalled") == [] and rig.service._writing  # nothing written yet, still waiting
    finally:
        disk.set()
    stuck.result(timeout=5.0)
    await wait_for(lambda: not rig.service._writing, 10.0, what="the evidence writes to finish")
    names = store.files("s-stalled")
    assert any(n.startswith("before_") for n in names) and any(n.startswith("after_") for n in names)
    assert (store.root / "s-stalled" / "summary.json").exists()

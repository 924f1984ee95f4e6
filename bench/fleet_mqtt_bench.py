"""`bench/run.py fleet-mqtt --machines N`: N simulated machines push their outbox through one local
Mosquitto broker to the reference cloud's MQTT ingest workers (docs/protocols/mqtt.md).

The machines are light clients — the real `SyncClient.push_once` over the real `MqttTransport`,
each with its own broker login (the files `vendedge refcloud mqtt-acl` writes) and an in-memory
outbox — spread over a few processes; the cloud runs in its own process (`vendedge refcloud
--mqtt-url`). Printed: records/s from the first push to the last ack, records lost (generated but
not in the cloud), duplicated effects (orders stored more than once), the p95 of a batch's
publish→ack time, and the broker's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sync_bench import BenchOutbox, _NoCommands, _NoConfig, _p95, _quiet, make_records  # noqa: E402
from sync.client import SyncClient  # noqa: E402
from sync.refcloud.mqtt_acl import passwords  # noqa: E402
from sync.refcloud.store import Store  # noqa: E402
from sync.transport.base import LinkDown  # noqa: E402
from sync.transport.mosquitto import Broker, free_port, write_auth_files  # noqa: E402
from sync.transport.mqtt import MqttTransport  # noqa: E402

TOKEN = "bench-admin-token"
CLOUD_PASSWORD = "bench-cloud-broker-password"
BATCH = 50
STEADY_BATCHES, STEADY_RECORDS, STEADY_PERIOD_S = 2, 5, 5.0  # phase 2: 5 records / machine / 5 s


def machine_ids(n: int) -> list[str]:
    return [f"fleet{i:05d}" for i in range(n)]


def secret_of(machine_id: str) -> bytes:
    return hashlib.sha256(f"bench-secret-{machine_id}".encode()).digest()


# one worker process: `count` machines -------------------------------------------------------------
async def _push(client: SyncClient, outbox: BenchOutbox, out: dict[str, Any], key: str) -> None:
    """Drain the outbox, timing each batch from publish to ack; an ack that never came is a re-send."""
    while await outbox.backlog():
        t0 = time.perf_counter()
        try:
            await client.push_once()
        except LinkDown:
            out["resends"] += 1
            await asyncio.sleep(0.2)
            continue
        out[key].append(time.perf_counter() - t0)


async def _machine(
    url: str, machine_id: str, per_machine: int, phases: dict[str, asyncio.Event], out: dict[str, Any]
) -> None:
    transport = MqttTransport(url, machine_id, secret_of(machine_id), keepalive_s=60, request_timeout_s=20)
    records = make_records(per_machine + STEADY_BATCHES * STEADY_RECORDS, machine_id)
    outbox = BenchOutbox(records[:per_machine])
    client = SyncClient(
        "",
        machine_id,
        secret_of(machine_id),
        outbox,
        _NoConfig(),
        _NoCommands(),
        batch_max_records=BATCH,
        transport=transport,
    )
    link = asyncio.create_task(transport.run(), name=f"bench.link.{machine_id}")
    rng = random.Random(machine_id)
    try:
        while not transport.connected:
            await asyncio.sleep(0.05)
        out["connected"] += 1
        await phases["drain"].wait()
        await _push(client, outbox, out, "lat")  # phase 1: everyone drains a backlog at once
        out["t_end"] = max(out["t_end"], time.time())
        out["drained"] += 1
        await phases["steady"].wait()
        await asyncio.sleep(rng.uniform(0, STEADY_PERIOD_S))  # phase 2: a day's rhythm, spread out
        for i in range(STEADY_BATCHES):
            tail = records[per_machine + i * STEADY_RECORDS : per_machine + (i + 1) * STEADY_RECORDS]
            outbox.pending.update((r.record_id, r) for r in tail)
            await _push(client, outbox, out, "steady_lat")
            await asyncio.sleep(STEADY_PERIOD_S)
    finally:
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        await client.close()


async def _wait_line() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _worker(url: str, first: int, count: int, total: int, per_machine: int) -> None:
    ids = machine_ids(total)[first : first + count]
    out: dict[str, Any] = {
        "connected": 0,
        "drained": 0,
        "resends": 0,
        "lat": [],
        "steady_lat": [],
        "t_end": 0.0,
    }
    phases = {"drain": asyncio.Event(), "steady": asyncio.Event()}
    tasks = [asyncio.create_task(_machine(url, m, per_machine, phases, out)) for m in ids]
    while out["connected"] < len(ids):
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": len(ids)}), flush=True)
    await _wait_line()
    out["t_start"] = time.time()
    phases["drain"].set()
    while out["drained"] < len(ids):
        await asyncio.sleep(0.02)
    print(json.dumps({"drained": len(ids)}), flush=True)
    await _wait_line()
    phases["steady"].set()
    await asyncio.gather(*tasks)
    lat, steady = sorted(out.pop("lat")), sorted(out.pop("steady_lat"))
    print(
        json.dumps(
            {
                **out,
                "batches": len(lat),
                "lat_ms": [round(x * 1000, 2) for x in lat],
                "steady_ms": [round(x * 1000, 2) for x in steady],
            }
        ),
        flush=True,
    )


# the conductor ------------------------------------------------------------------------------------
def _cloud(tmp: pathlib.Path, broker: Broker, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync.refcloud",
            "--db",
            str(tmp / "cloud.db"),
            "--port",
            str(free_port()),
            "--admin-token",
            TOKEN,
            "--mqtt-url",
            broker.url,
            "--mqtt-workers",
            str(workers),
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), VENDEDGE_MQTT_PASSWORD=CLOUD_PASSWORD),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _count(db: str, expected_orders: set[str]) -> tuple[int, int, int]:
    con = sqlite3.connect(db)
    try:
        records = con.execute("SELECT count(*) FROM records").fetchone()[0]
        rows = con.execute("SELECT machine_id || '/' || order_id FROM orders").fetchall()
    finally:
        con.close()
    stored = [r[0] for r in rows]
    return records, len(stored) - len(set(stored)), len(expected_orders - set(stored))


def run(
    machines: int = 1000, per_machine: int = 100, processes: int = 4, cloud_workers: int = 2
) -> dict[str, Any]:
    _quiet()
    ids = machine_ids(machines)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = pathlib.Path(tmp_s)
        store = Store(str(tmp / "cloud.db"))
        for m in ids:
            store.register_machine(m, secret_of(m), time.time())
        store.close()
        passwd, acl = write_auth_files(
            tmp / "auth", passwords(str(tmp / "cloud.db"), CLOUD_PASSWORD), "vendedge"
        )
        (tmp / "broker").mkdir()
        broker = Broker(tmp / "broker", passwd, acl).start()
        cloud = _cloud(tmp, broker, cloud_workers)
        procs: list[subprocess.Popen[str]] = []
        try:
            time.sleep(1.0)  # the cloud's workers subscribe before anyone pushes
            share = -(-machines // processes)
            for first in range(0, machines, share):
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.fleet_mqtt_bench",
                            "worker",
                            broker.url,
                            str(first),
                            str(min(share, machines - first)),
                            str(machines),
                            str(per_machine),
                        ],
                        cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
            t_connect = time.monotonic()
            for p in procs:
                _read_json(p)
            connect_s = time.monotonic() - t_connect
            rss_peak = broker.rss_mb()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            for p in procs:
                _read_json(p)
                rss_peak = max(rss_peak, broker.rss_mb())
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("steady\n")
                p.stdin.flush()
            results = [_read_json(p) for p in procs]
            rss_peak = max(rss_peak, broker.rss_mb())
            cpu = {
                "broker": _cpu_s(broker.proc.pid if broker.proc else 0),
                "cloud": _cpu_s(cloud.pid),
                "machines": round(sum(_cpu_s(p.pid) for p in procs), 1),
            }
            for p in procs:
                p.wait(30)
            time.sleep(0.5)
            rss_peak = max(rss_peak, broker.rss_mb())
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            cloud.terminate()
            cloud.wait(20)
            broker.stop()
        expected_orders = {
            f"{m}/{m}-o{i}" for m in ids for i in range(0, per_machine + STEADY_BATCHES * STEADY_RECORDS, 10)
        }
        records, dup_orders, lost_orders = _count(str(tmp / "cloud.db"), expected_orders)
    total = machines * (per_machine + STEADY_BATCHES * STEADY_RECORDS)
    drained = machines * per_machine
    elapsed = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    lat = [x / 1000 for r in results for x in r["lat_ms"]]
    steady = [x / 1000 for r in results for x in r["steady_ms"]]
    return {
        "machines": machines,
        "records": total,
        "records_per_s": round(drained / elapsed),
        "lost": total - records + lost_orders,
        "duplicated_effects": dup_orders,
        "ack_p95_ms": round(_p95(steady) * 1000, 1),
        "ack_p50_ms": round(sorted(steady)[len(steady) // 2] * 1000, 1) if steady else 0.0,
        "ack_max_ms": round(max(steady, default=0.0) * 1000, 1),
        "drain_ack_p95_ms": round(_p95(lat) * 1000, 1),
        "steady_records_per_s": round(machines * STEADY_RECORDS / STEADY_PERIOD_S),
        "broker_rss_mb": round(rss_peak, 1),
        "seconds": round(elapsed, 2),
        "connect_s": round(connect_s, 2),
        "batches": sum(r["batches"] for r in results),
        "resends": sum(r["resends"] for r in results),
        "processes": len(results),
        "cpu_s": cpu,
        "cloud_workers": cloud_workers,
        "target_records_per_s": 5000,
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used so far."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def _read_json(p: subprocess.Popen[str]) -> dict[str, Any]:
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("{"):
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise RuntimeError(f"bench worker exited with {p.wait()}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _quiet()
        url, first, count, total, per = sys.argv[2], *map(int, sys.argv[3:7])
        asyncio.run(_worker(url, first, count, total, per))
    else:
        ap = argparse.ArgumentParser()
        ap.add_argument("--machines", type=int, default=1000)
        ap.add_argument("--per-machine", type=int, default=100)
        print(json.dumps(run(ap.parse_args().machines, ap.parse_args().per_machine)))

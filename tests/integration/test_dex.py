"""DEX reads against a real ledger filled by real vends (hw_sim board over a pty), checked by a small
parser written here from the EVA-DTS description — not edge/core/dex.py — and by our own SQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from edge.ledger.db import LedgerDB
from edge.ledger.dex import Identity
from edge.services.dex import DexService
from tests.support.rigs.vend import start_rig, write_config


def parse_dex(text: str) -> dict[str, list[list[str]]]:
    """Envelope DXS, ST … SE, DXE; SE01 = segments from ST to SE inclusive; returns tag -> elements."""
    assert text.endswith("\r\n")
    lines = text[:-2].split("\r\n")
    assert lines[0].startswith("DXS*") and lines[-1].startswith("DXE*")
    assert lines[1].split("*")[:2] == ["ST", "001"]
    se = lines[-2].split("*")
    assert se[0] == "SE" and int(se[1]) == len(lines) - 2, "SE01 must count ST..SE"
    assert se[2] == lines[1].split("*")[2], "SE02 repeats ST02"
    out: dict[str, list[list[str]]] = {}
    for line in lines[2:-2]:
        tag, *elements = line.split("*")
        assert tag[:1].isalpha() and tag.isalnum() and len(tag) == 3, line
        out.setdefault(tag, []).append(elements)
    return out


def n(elements: list[str], i: int) -> int:
    return int(elements[i]) if i < len(elements) and elements[i] else 0


async def ledger_totals(db, since_read: bool, closing: int | None = None) -> dict[str, tuple[int, int]]:
    """Our own SQL: (count, value) of completed paid/test/free vends: all, not yet interim-read, or the
    ones interim read `closing` counted."""
    extra = " AND o.order_id NOT IN (SELECT order_id FROM dex_read_orders)" if since_read else ""
    if closing is not None:
        extra = f" AND o.order_id IN (SELECT order_id FROM dex_read_orders WHERE read_id = {int(closing)})"
    out = {}
    for cls, cond in (("paid", "o.kind != 'test_vend' AND l.unit_price > 0"), ("test", "o.kind = 'test_vend'"),
                      ("free", "o.kind != 'test_vend' AND l.unit_price = 0")):
        row = await db.fetchone("SELECT COALESCE(SUM(l.qty),0) AS c, COALESCE(SUM(l.qty*l.unit_price),0) AS v "
                                "FROM orders o JOIN order_lines l USING(order_id) "
                                f"WHERE o.status='completed' AND {cond}{extra}")
        out[cls] = (row["c"], row["v"])
    return out


def va(d, tag):
    e = d[tag][0]
    return (n(e, 1), n(e, 0)), (n(e, 3), n(e, 2))  # (count, value) init, interim


def pa_sum(d, tag, off):
    init = (sum(n(e, 0) for e in d[tag]), sum(n(e, 1) for e in d[tag]))
    interim = (sum(n(e, 2) for e in d[tag]), sum(n(e, 3) for e in d[tag]))
    return init, interim


@pytest.fixture
async def rig(tmp_path):
    r = await start_rig(str(tmp_path), speed=200.0)
    yield r
    await r.stop()


async def check(db, read) -> dict[str, list[list[str]]]:
    d = parse_dex(read.text)
    closing = read.read_id if read.kind == "interim" else None
    init, interim = await ledger_totals(db, False), await ledger_totals(db, True, closing)
    for tag, cls in (("VA1", "paid"), ("VA2", "test"), ("VA3", "free")):
        assert va(d, tag) == (init[cls], interim[cls]), tag
    for tag, cls in (("PA2", "paid"), ("PA3", "test"), ("PA4", "free")):
        assert pa_sum(d, tag, 0) == (init[cls], interim[cls]), tag
    await check_selections(db, d, closing)
    return d


async def check_selections(db, d, closing: int | None) -> None:
    """Every PA1 block: PA2/PA3/PA4 of that selection equal our per-slot SQL exactly."""
    assert len(d["PA1"]) == len(d["PA2"]) == len(d["PA3"]) == len(d["PA4"]) == len(d["PA5"])
    interim_cond = ("o.order_id NOT IN (SELECT order_id FROM dex_read_orders)" if closing is None else
                    f"o.order_id IN (SELECT order_id FROM dex_read_orders WHERE read_id = {int(closing)})")
    for i, pa1 in enumerate(d["PA1"]):
        for tag, cond in (("PA2", "o.kind != 'test_vend' AND l.unit_price > 0"), ("PA3", "o.kind = 'test_vend'"),
                          ("PA4", "o.kind != 'test_vend' AND l.unit_price = 0")):
            row = await db.fetchone(
                "SELECT COALESCE(SUM(l.qty),0) AS c, COALESCE(SUM(l.qty*l.unit_price),0) AS v, "
                f"COALESCE(SUM(CASE WHEN {interim_cond} THEN l.qty END),0) AS ic, "
                f"COALESCE(SUM(CASE WHEN {interim_cond} THEN l.qty*l.unit_price END),0) AS iv "
                "FROM orders o JOIN order_lines l USING(order_id) "
                f"WHERE o.status='completed' AND l.slot_id = ? AND {cond}", (pa1[0],))
            e = d[tag][i]
            assert [n(e, 0), n(e, 1), n(e, 2), n(e, 3)] == [row["c"], row["v"], row["ic"], row["iv"]], (pa1, tag)


async def test_reads_match_ledger_and_interim_resets(rig):
    m, db = rig.daemon.machine, rig.daemon.db
    service = DexService(db, Identity("SN1", "vendedge", "ctl-1", "1.0", "EUR"))
    slots = sorted(rig.sim.stock)
    for i in range(12):
        await m.sell(slots[i % len(slots)], f"card:{i}")
    await m.test_vend(slots[0], "tech")
    rig.sim.jam(slots[1])
    failed = await m.sell(slots[1], "card:j")
    assert failed["status"] == "failed"
    first = await check(db, await service.read(interim=False))
    assert va(first, "VA1")[0][0] == 12 and va(first, "VA2")[0][0] == 1
    assert first["ID1"][0][:2] == ["SN1", "vendedge"] and first["ID4"][0][:2] == ["2", "978"]
    jams = [e for e in first["EA2"] if e[0] == "EJJ"][0]
    assert (n(jams, 1), n(jams, 2)) == (1, 1)

    interim = await check(db, await service.read(interim=True))
    assert va(interim, "VA1")[1][0] == 12  # the reset read still reports the interval it closes
    for i in range(5):
        await m.sell(slots[(i + 3) % len(slots)], f"card:b{i}")
    after = await check(db, await service.read(interim=False))
    assert va(after, "VA1")[0][0] == 17 and va(after, "VA1")[1][0] == 5
    jams = [e for e in after["EA2"] if e[0] == "EJJ"][0]
    assert (n(jams, 1), n(jams, 2)) == (1, 0)
    assert after["EA3"][0][0] == "1"  # one read with reset so far
    rows = await db.fetchall("SELECT kind, payload FROM outbox WHERE kind='dex_read' ORDER BY seq")
    assert len(rows) == 3


async def test_interim_read_that_fails_marks_nothing(rig, monkeypatch):
    """A crash inside the read's transaction: nothing is marked, the next interim read counts it all."""
    m, db = rig.daemon.machine, rig.daemon.db
    service = DexService(db, Identity("SN1", "vendedge", "ctl-1", "1.0", "EUR"))
    for slot in sorted(rig.sim.stock)[:3]:
        await m.sell(slot, "card")
    import edge.ledger.dex as repo

    def boom(*a, **k):
        raise RuntimeError("power cut mid-read")
    monkeypatch.setattr(repo, "render", boom)
    with pytest.raises(RuntimeError):
        await service.read(interim=True)
    monkeypatch.undo()
    assert (await db.fetchone("SELECT COUNT(*) AS c FROM dex_read_orders"))["c"] == 0
    assert (await db.fetchone("SELECT COUNT(*) AS c FROM dex_reads"))["c"] == 0
    d = await check(db, await service.read(interim=True))
    assert va(d, "VA1")[1][0] == 3
    d = await check(db, await service.read(interim=False))
    assert va(d, "VA1") == ((3, va(d, "VA1")[0][1]), (0, 0))


async def _create_ledger(path: str) -> None:
    db = await LedgerDB.open(path)
    await db.close()


def test_cli_dex_help_missing_ledger_and_a_real_read(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edge.cli", "dex", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "--interim" in out.stdout
    cfg = write_config(tmp_path, board_port="/dev/null")
    cmd = [sys.executable, "-m", "edge.cli", "dex", "--config", str(cfg)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={**os.environ})
    assert out.returncode == 2 and "machine.data_dir" in out.stderr
    (tmp_path / "data").mkdir()
    asyncio.run(_create_ledger(str(tmp_path / "data" / "ledger.sqlite3")))
    out = subprocess.run([*cmd, "--interim"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    d = parse_dex(out.stdout.replace("\n", "\r\n").replace("\r\r", "\r"))
    assert va(d, "VA1") == ((0, 0), (0, 0)) and d["EA3"][0][0] == "1"


async def _cli(config: str, *args: str, crash_at: str = "") -> tuple[int, str]:
    env = {**os.environ, "VENDEDGE_CRASH_AT": crash_at}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edge.cli", "dex", "--config", config, *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode() or err.decode()


async def test_cli_killed_inside_the_interim_read_while_the_daemon_sells(rig):
    """`vendedge dex --interim` dies (os._exit, like a power cut) inside its transaction, with the daemon
    running: nothing is marked or queued; the next interim read counts every sale exactly once."""
    m, db = rig.daemon.machine, rig.daemon.db
    for slot in sorted(rig.sim.stock)[:6]:
        await m.sell(slot, "card")
    config = str(rig.state_dir / "vendedge.toml")
    code, _ = await _cli(config, "--interim", crash_at="ledger.mid_transaction")
    assert code == 137
    for table in ("dex_reads", "dex_read_orders"):
        assert (await db.fetchone(f"SELECT COUNT(*) AS c FROM {table}"))["c"] == 0
    assert (await db.fetchone("SELECT COUNT(*) AS c FROM outbox WHERE kind='dex_read'"))["c"] == 0
    await m.sell(sorted(rig.sim.stock)[0], "card")  # the daemon still writes (no lock left behind)
    code, text = await _cli(config, "--interim")
    assert code == 0, text
    row = await db.fetchone("SELECT read_id FROM dex_reads")
    d = await check(db, Read(text.replace("\n", "\r\n"), row["read_id"], "interim"))
    assert va(d, "VA1")[1][0] == 7 == (await db.fetchone("SELECT COUNT(*) AS c FROM dex_read_orders"))["c"]


class Read:
    def __init__(self, text: str, read_id: int, kind: str) -> None:
        self.text, self.read_id, self.kind = text, read_id, kind

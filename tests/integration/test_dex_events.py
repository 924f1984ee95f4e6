"""EA2/EA7 figures from a real SQLite ledger: door, temperature and power events as the services write them
(Tx.event / repo.raise_alarm), counted since init and since the last interim read."""

from __future__ import annotations

from edge.ledger import repo
from edge.ledger.db import LedgerDB
from edge.ledger.dex import Identity
from edge.services.dex import DexService
from tests.integration.test_dex import n, parse_dex

IDENT = Identity("SN1", "vendedge", "ctl-1", "1.0", "EUR")


def ea2(d, code):
    e = [e for e in d["EA2"] if e[0] == code][0]
    return n(e, 1), n(e, 2), n(e, 3)


async def test_door_temperature_and_unclean_stops(tmp_path):
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"))
    try:
        service = DexService(db, IDENT)
        async with db.tx() as tx:  # a clean run, then a run that never stopped (power cut), then one more
            for kind in ("daemon_started", "daemon_stopped", "daemon_started", "daemon_started"):
                await tx.event(kind, {}, sync=False)
            await tx.event("door_opened", {})
            await repo.raise_alarm(tx, "temp_high:0", "temperature_high", "too warm")
        d = parse_dex((await service.read(interim=True)).text)
        assert d["EA7"][0] == ["1", "1"]
        assert ea2(d, "EGS") == (1, 1, 0) and ea2(d, "EJK") == (1, 1, 1)
        assert [e[0] for e in d["EA1"]] == ["EGS", "EJK", "EJL"]
        async with db.tx() as tx:
            await tx.event("door_opened", {})
            await tx.event("daemon_started", {}, sync=False)  # another start with no stop before it
            await repo.clear_alarm(tx, "temp_high:0")
        d = parse_dex((await service.read(interim=False)).text)
        assert d["EA7"][0] == ["1", "2"]
        assert ea2(d, "EGS") == (2, 1, 0) and ea2(d, "EJK") == (1, 0, 0)
    finally:
        await db.close()


async def test_mains_failures_count_once_even_when_the_daemon_died_in_them(tmp_path):
    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"))
    try:
        service = DexService(db, IDENT)
        async with db.tx() as tx:  # an outage ridden through on the backup supply
            for kind in ("daemon_started", "mains_failed", "mains_restored"):
                await tx.event(kind, {}, sync=False)
        d = parse_dex((await service.read(interim=True)).text)
        assert d["EA7"][0] == ["1", "1"]
        async with db.tx() as tx:  # an outage that outlasted it: the restart is the same outage
            for kind in ("mains_failed", "daemon_started", "mains_restored"):
                await tx.event(kind, {}, sync=False)
        d = parse_dex((await service.read(interim=True)).text)
        assert d["EA7"][0] == ["1", "2"]
        async with db.tx() as tx:  # later a kill -9 with mains present: an unclean stop, counted
            await tx.event("daemon_started", {}, sync=False)
        d = parse_dex((await service.read(interim=False)).text)
        assert d["EA7"][0] == ["1", "3"]
    finally:
        await db.close()

"""The real daemon (tests/support/run_daemon.py, a subprocess) against the adversarial board on a pty,
and the invariant read from the ledger file (sqlite3, read only) against the board's truth."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import re
import sqlite3
from typing import Any

from tests.adversarial.board import ST_DONE, AdversarialBoard
from tests.support.rigs.vend import write_config
from tests.support.run_daemon import DaemonProcess, spiral_stock

# the documented defaults (edge/config.py VendBoardConfig): the demo config shortens them
REPLY_TIMEOUT_S, RETRIES, VEND_TIMEOUT_S = 0.5, 3, 15.0


def write_rig_config(state_dir: pathlib.Path, link: str, vend_timeout_s: float = VEND_TIMEOUT_S) -> pathlib.Path:
    cfg = write_config(state_dir, board_port=link)
    text = cfg.read_text()
    text = re.sub(r"(?m)^reply_timeout_s = .*$", f"reply_timeout_s = {REPLY_TIMEOUT_S}", text)
    text = re.sub(r"(?m)^retries = .*$", f"retries = {RETRIES}", text)
    text = re.sub(r"(?m)^vend_timeout_s = .*$", f"vend_timeout_s = {vend_timeout_s}", text)
    cfg.write_text(text)
    return cfg


class Rig:
    """``async with Rig(tmp_path) as rig``: board up, daemon up, every slot full on both sides."""

    def __init__(
        self,
        root: pathlib.Path,
        *,
        memory: int = 1024,
        seed: int = 1,
        v1_only: bool = False,
        restock: bool = True,
        vend_timeout_s: float = VEND_TIMEOUT_S,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.link = str(root / "ttyADV")
        self.config = write_rig_config(root, self.link, vend_timeout_s)
        self.board = AdversarialBoard(
            self.link, spiral_stock(root), memory=memory, seed=seed, v1_only=v1_only
        )
        self.daemon = DaemonProcess(self.config, root / "daemon.log")
        self.ledger_path = root / "data" / "ledger.sqlite3"
        self._restock = restock

    async def __aenter__(self) -> Rig:
        self.board.start()
        await self.start_daemon()
        if self._restock:
            await self.daemon.ask("restock")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.daemon.stop(timeout_s=5)
        finally:
            self.board.stop()

    async def start_daemon(self) -> None:
        await self.daemon.start()

    async def sell(self, slot: str, timeout_s: float = 60) -> dict[str, Any]:
        return await self.daemon.ask(f"sell {slot}", timeout_s)  # type: ignore[no-any-return]

    async def wait_board_idle(self, timeout_s: float = 40) -> None:
        async with asyncio.timeout(timeout_s):
            while self.board.busy():
                await asyncio.sleep(0.05)

    async def wait_reconciled(self) -> int:
        """Until the daemon has nothing open it could settle from the board (or gives up after ~10 s)."""
        await self.wait_board_idle()
        answer = await self.daemon.ask("wait_reconciled", 60)
        return int(answer["unreconciled"])

    async def needs_count(self) -> list[dict[str, Any]]:
        return await self.daemon.ask("needs_count")  # type: ignore[no-any-return]

    async def count_all(self) -> list[str]:
        """Settle every vend waiting for a count with the board's true stock; return their order ids."""
        done = []
        for item in await self.needs_count():
            stock, _, _ = self.board.snapshot()
            answer = await self.daemon.ask(f"count {item['order_id']} {stock[item['slot_id']]}")
            assert answer.get("status") in ("completed", "failed"), answer
            done.append(item["order_id"])
        return done

    # ---- the ledger, read only -----------------------------------------------------------------------

    def ledger(self) -> Ledger:
        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            orders = {r["order_id"]: dict(r) for r in conn.execute("SELECT * FROM orders")}
            journal = [dict(r) for r in conn.execute("SELECT * FROM vend_journal ORDER BY journal_id")]
            stock = {r["slot_id"]: dict(r) for r in conn.execute("SELECT * FROM stock")}
            alarms = {r["alarm_key"]: dict(r) for r in conn.execute("SELECT * FROM alarms")}
        finally:
            conn.close()
        return Ledger(orders, journal, stock, alarms)


@dataclasses.dataclass
class Ledger:
    orders: dict[str, dict[str, Any]]
    journal: list[dict[str, Any]]
    stock: dict[str, dict[str, Any]]
    alarms: dict[str, dict[str, Any]]

    def entry(self, order_id: str) -> dict[str, Any]:
        rows = [j for j in self.journal if j["order_id"] == order_id]
        assert len(rows) == 1, (order_id, rows)
        return rows[0]

    def dump(self, order_id: str) -> str:
        return f"order={self.orders.get(order_id)} journal={[j for j in self.journal if j['order_id'] == order_id]}"


def violations(rig: Rig, *, settled: bool = True) -> list[str]:
    """The invariant, as a list of plain-language breaches (empty = holds).

    Per vend order: items the board dropped for its seq == 1 iff the order is completed; never more than
    one; no refund where an item fell; none still pending/needs_count/unknown once ``settled``; a
    ``needs_count`` order only where the board cannot tell (its answer for the seq is not ``done``).
    The ledger's stock equals the board's true stock on every spiral slot. The controller broke no
    board-side rule (no VEND after an ACK from an earlier boot, at most 1 + retries copies of a VEND)."""
    stock, dropped, _ = rig.board.snapshot()
    led = rig.ledger()
    out: list[str] = []
    for order_id, order in led.orders.items():
        if order["kind"] != "vend":
            continue
        e = led.entry(order_id)
        fell = dropped.get(e["board_seq"], 0)
        where = f"{order_id} seq={e['board_seq']} fell={fell}: {led.dump(order_id)}"
        if fell > 1:
            out.append(f"double dispense {where}")
        if order["status"] == "completed" and fell != 1:
            out.append(f"completed (charged) but no item fell {where}")
        if fell and order["status"] != "completed" and (settled or order["status"] != "needs_count"):
            out.append(f"item fell but order is {order['status']} {where}")
        if order["refund_due"] and fell:
            out.append(f"refund due on an item that fell {where}")
        if order["status"] == "needs_count" and rig.board.answer_for(e["board_seq"])[0] == ST_DONE:
            out.append(f"needs_count although the board answers done {where}")
        if settled and order["status"] not in ("completed", "failed"):
            out.append(f"not settled {where}")
    for slot, n in stock.items():
        if settled and slot in led.stock and led.stock[slot]["count"] != n:
            out.append(f"stock {slot}: ledger {led.stock[slot]['count']} board {n}")
    out += [f"controller: {v}" for v in rig.board.violations]
    out += [
        f"controller: VEND {seq} sent {n} times"
        for seq, n in rig.board.vend_copies.items()
        if n > 1 + RETRIES
    ]
    return out

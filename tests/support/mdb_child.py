"""The daemon plus the MDB payment service in a subprocess that a test can SIGKILL (tests only).

    python -m tests.support.mdb_child CONFIG READER_TTY
stdin lines, one JSON answer line each (the first is {"ready": true}):
  `authorize SLOT`  → {"payment_id", "ref"}  (approval committed; nothing dispensed yet)
  `vend SLOT REF`   → {"status"}             (the vend flow with payment_ref=REF)
  `settle PAYMENT_ID yes|no|unknown` → {"state"}
  `restock`         → every slot filled in the ledger (the board simulator is full already)
  `recover`         → {"left"}                (vend journal reconciled with the board first)
  `quit`
"""

from __future__ import annotations

import asyncio
import json
import sys

from drivers.mdb import CashlessReader
from edge.config import load_config
from edge.core.ports import Authorization
from edge.daemon import Daemon
from edge.ledger import payments, repo
from edge.logs import setup_logging
from edge.services.payment_mdb import MdbPayment, MdbPaymentConfig


async def main(config_path: str, reader_tty: str) -> None:
    cfg = load_config(config_path)
    setup_logging(cfg.machine.id, level="warning", fmt="json", stream=sys.stderr)
    daemon = Daemon(cfg)
    machine = await daemon.start()
    await daemon.board.wait_connected(5)  # type: ignore[union-attr]
    reader = CashlessReader(reader_tty, poll_interval_s=0.02, reply_timeout_s=0.3)
    await reader.start()
    await reader.wait_connected(5)
    pay = MdbPayment(
        daemon.db, reader, MdbPaymentConfig(card_wait_s=5, approval_timeout_s=3, step_timeout_s=3)
    )
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            cmd, args = line[0], line[1:]
            if cmd == "authorize":
                sku = (await repo.current_planogram(daemon.db)).sku_for_slot(args[0])
                auth = await pay.authorize(args[0], sku.price.amount, sku.price.currency)
                out = {"payment_id": auth.payment_id, "ref": auth.ref}
            elif cmd == "restock":
                out = await machine.restock(None, None, actor="test")
            elif cmd == "vend":
                out = {"status": (await machine.sell(args[0], args[1]))["status"]}
            elif cmd == "settle":
                row = await payments.payment(daemon.db, args[0])
                auth = Authorization(row.payment_id, row.method, row.amount, row.currency)
                out = {"state": await pay.settle(auth, {"yes": True, "no": False}.get(args[1]))}
            elif cmd == "recover":
                for _ in range(100):
                    if not machine.vend.unreconciled:
                        break
                    await asyncio.sleep(0.1)
                out = {"left": await pay.recover(), "vend_unreconciled": machine.vend.unreconciled}
            else:
                out = {"error": f"unknown command {cmd}"}
            print(json.dumps(out), flush=True)
    finally:
        await reader.stop()
        await daemon.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

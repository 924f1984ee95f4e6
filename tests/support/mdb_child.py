"""The daemon, wired with [payment] method = "mdb", in a subprocess that a test can SIGKILL (tests only).

    python -m tests.support.mdb_child CONFIG
stdin lines, one JSON answer line each (the first is {"ready": true}, once the reader is set up):
  `restock`         → every slot filled in the ledger (the board simulator is full already)
  `sell SLOT`       → {"status"}   the whole card sale, as a customer makes it
  `authorize SLOT`  → {"payment_id", "ref"}   only the card step (approval committed, nothing dispensed)
  `vend SLOT REF`   → {"status"}   only the vend step of a card sale, with payment_ref=REF
  `wait_closed`     → {"open", "unsettled", "vend_unreconciled"} once the daemon's own payment loop has
                      closed what a previous run left open (or after 20 s)
  `quit`
"""

from __future__ import annotations

import asyncio
import json
import sys

from edge.config import load_config
from edge.daemon import Daemon
from edge.ledger import payments, repo
from edge.logs import setup_logging
from edge.services.payment_mdb import METHOD, MdbPayment


async def _wait_closed(daemon: Daemon, pay: MdbPayment) -> dict[str, int]:
    assert daemon.db is not None and daemon.machine is not None
    vend = daemon.machine.vend
    for _ in range(200):
        open_ = len(await payments.open_payments(daemon.db, METHOD))
        if not (open_ or pay.unsettled or vend.unreconciled):
            break
        await asyncio.sleep(0.1)
    return {"open": open_, "unsettled": pay.unsettled, "vend_unreconciled": vend.unreconciled}


async def main(config_path: str) -> None:
    cfg = load_config(config_path)
    setup_logging(cfg.machine.id, level="warning", fmt="json", stream=sys.stderr)
    daemon = Daemon(cfg)
    machine = await daemon.start()
    pay = machine.services.payment
    assert isinstance(pay, MdbPayment)
    async with asyncio.timeout(10):
        while not pay.reader.ready:
            await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            cmd, args = line[0], line[1:]
            if cmd == "restock":
                out: dict = await machine.restock(None, None, actor="test")
            elif cmd == "sell":
                out = {"status": (await machine.sell(args[0]))["status"]}
            elif cmd == "authorize":
                sku = (await repo.current_planogram(daemon.db)).sku_for_slot(args[0])
                auth = await pay.authorize(args[0], sku.price.amount, sku.price.currency)
                out = {"payment_id": auth.payment_id, "ref": auth.ref}
            elif cmd == "vend":
                out = {"status": (await machine.vend._sell(args[0], args[1]))["status"]}
            elif cmd == "wait_closed":
                out = await _wait_closed(daemon, pay)
            else:
                out = {"error": f"unknown command {cmd}"}
            print(json.dumps(out), flush=True)
    finally:
        await daemon.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

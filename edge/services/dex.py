"""DEX reads for the CLI, the technician page and the cloud: identity from the config, figures from
the ledger (edge.ledger.dex), text from edge.core.dex."""

from __future__ import annotations

from dataclasses import dataclass

from edge import __version__
from edge.ledger import dex as dex_repo
from edge.ledger.db import LedgerDB
from edge.ledger.dex import DexRead, Identity

MODEL = "vendedge"


@dataclass
class DexService:
    """`read(interim=True)` resets the interim counters; every read is recorded and queued for the cloud."""

    db: LedgerDB
    identity: Identity

    @classmethod
    def for_machine(cls, db: LedgerDB, machine_id: str, currency: str) -> DexService:
        return cls(db, Identity(machine_serial=machine_id, machine_model=MODEL, controller_id=machine_id,
                                software_version=__version__, currency=currency))

    async def read(self, *, interim: bool, actor: str = "") -> DexRead:
        return await dex_repo.read(self.db, self.identity, interim=interim, actor=actor)


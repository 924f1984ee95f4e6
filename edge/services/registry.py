"""The machine's optional services, typed: one field per service, None when it is not configured.

Built by the composition root (`edge/daemon.py`) and read as `machine.services.door`, so a misspelt
service or attribute is a mypy error rather than a `getattr(svc, "online", False)` that is quietly
False for weeks. The class has slots, so assigning a name that is not a field fails at run time too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.core.ports import SyncLink
    from edge.services.door import Door
    from edge.services.eco import EcoService
    from edge.services.enrollment import EnrollmentService
    from edge.services.maintenance import MaintenanceService
    from edge.services.offline_auth import OfflineAuth
    from edge.services.payment_mdb import MdbPayment
    from edge.services.plant import Plant
    from edge.services.power import PowerService
    from edge.services.shelves import WeightShelves
    from edge.services.takeandgo import TakeAndGoService
    from edge.services.temperature import TemperatureService


@dataclass(slots=True)
class Services:
    """Every optional service of one machine (the vend flow and stock are always there: see Machine)."""

    plant: Plant | None = None
    temperature: TemperatureService | None = None
    shelves: WeightShelves | None = None
    door: Door | None = None
    power: PowerService | None = None
    maintenance: MaintenanceService | None = None
    eco: EcoService | None = None
    sync: SyncLink | None = None
    takeandgo: TakeAndGoService | None = None
    offline_auth: OfflineAuth | None = None
    enrollment: EnrollmentService | None = None
    payment: MdbPayment | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

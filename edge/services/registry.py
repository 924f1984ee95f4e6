"""The machine's optional services, typed: one field per service, None when it is not configured.

Built by the composition root (`edge/daemon.py`) and read as `machine.services.door`, so a misspelt
service or attribute is a mypy error rather than a `getattr(svc, "online", False)` that is quietly
False for weeks. `ServicesView` is the old `machine.extras` dict interface over the same fields for
code not moved yet; it refuses unknown names instead of storing them.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

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


@dataclass
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


class ServicesView(MutableMapping[str, Any]):
    """`machine.extras` as it was (a dict of the services present), backed by `Services`.

    Deprecated: read `machine.services.<name>`. Setting an unknown name raises KeyError."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def __getitem__(self, name: str) -> Any:
        value = getattr(self._services, name, None) if name in Services.names() else None
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in Services.names():
            raise KeyError(f"no service {name!r} in Services; known: {', '.join(Services.names())}")
        setattr(self._services, name, value)

    def __delitem__(self, name: str) -> None:
        self[name]  # KeyError when absent
        setattr(self._services, name, None)

    def __iter__(self) -> Iterator[str]:
        return (n for n in Services.names() if getattr(self._services, n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

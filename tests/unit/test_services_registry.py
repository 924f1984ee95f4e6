"""The typed services registry: a misspelt service name is an error, at lint time and at run time."""

import pytest

from edge.services.registry import Services


def test_a_misspelt_service_name_is_refused_instead_of_stored():
    services = Services()
    door = object()
    services.door = door  # type: ignore[assignment]
    assert services.door is door
    with pytest.raises(AttributeError, match="sycn"):
        services.sycn = object()  # type: ignore[attr-defined]  # the typo that hid "cloud offline" for weeks
    assert not hasattr(services, "sycn")


def test_every_service_field_is_optional_and_starts_empty():
    services = Services()
    assert all(getattr(services, n) is None for n in Services.names())
    assert {"plant", "door", "sync", "takeandgo", "temperature"} <= set(Services.names())

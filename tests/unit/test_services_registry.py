"""The typed services registry and the old `extras` view over it: a misspelt name is an error."""

import pytest

from edge.services.registry import Services, ServicesView


def test_the_extras_view_reads_and_writes_the_typed_fields_and_refuses_unknown_names():
    services = Services()
    view = ServicesView(services)
    assert dict(view) == {} and view.get("door") is None and "door" not in view
    door = object()
    view["door"] = door
    assert services.door is door and dict(view) == {"door": door} and len(view) == 1
    with pytest.raises(KeyError, match="no service 'sycn'"):
        view["sycn"] = object()  # the typo that hid "cloud offline" for weeks is now loud
    assert view.get("sycn") is None
    del view["door"]
    assert services.door is None and "door" not in view


def test_every_service_field_is_optional_and_starts_empty():
    services = Services()
    assert all(getattr(services, n) is None for n in Services.names())
    assert {"plant", "door", "sync", "takeandgo", "temperature"} <= set(Services.names())

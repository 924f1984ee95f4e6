"""The one backoff rule (drivers/backoff.py): capped exponential, equal jitter, reset on success."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.backoff import Backoff


@given(base=st.floats(0.001, 5.0), cap_factor=st.floats(1.0, 1000.0), seed=st.integers(0, 2**32))
def test_delays_grow_to_the_cap_and_stay_within_equal_jitter(base, cap_factor, seed):
    cap = base * cap_factor
    b = Backoff(base, cap, random.Random(seed))
    for n in range(40):
        ceiling = min(cap, base * 2**n)
        assert ceiling / 2 <= b.next() <= ceiling
    b.reset()
    assert base / 2 <= b.next() <= base and b.attempts == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="0 < base_s <= cap_s"):
        Backoff(1.0, 0.5)
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)

"""A take-and-go basket the machine cannot decide: the shelf camera is dead while F1 is taken."""

from __future__ import annotations

import random
from typing import Any


async def basket_for_review(rig: Any, session_id: str) -> dict[str, Any]:
    """Shop one basket that must go to review (evidence on disk), then heal the camera; returns the session."""
    from tests.support.rigs.takeandgo import shop

    rig.cameras.fail("shelf0", "dead")
    row, _ = await shop(rig, random.Random(0), session_id=session_id, linger_s=1.0, actions=[("take", "F1")])
    assert row["state"] == "needs_review"
    rig.cameras.heal("shelf0")
    return dict(row)

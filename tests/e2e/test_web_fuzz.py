"""Fuzzing the web forms and JSON API bodies of a logged-in technician: every state-changing route gets
hostile values (wrong types, huge and odd strings, out-of-range numbers, nested JSON, missing fields).
The only allowed answers are the documented ones — never a 5xx — and a refused request changes nothing."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from tests.e2e.test_web_security import SELF_SERVICE, action_routes, concrete, web  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)

ALLOWED = {200, 201, 303, 400, 403, 404, 409, 413, 415, 422, 429, 501}  # 501: service not on this machine
FIELDS = ["slot_id", "count", "confirm", "ms", "shelf", "unit", "address", "table", "name", "day", "kind",
          "best_before", "decision", "basket", "qty_cola"]


def hostile(rng: random.Random) -> Any:
    return rng.choice([
        None, True, -1, 0, 2**63, -2**31, 1e308, float("-inf"), "", " ", "A1", "Z99", "A0", "a1", "../../etc",
        "A1; DROP TABLE orders", "<script>x</script>", "\x00\x01", "é" * 50, "9" * 400, [], ["A1"], {"x": 1},
        {"slot_id": {"slot_id": "A1"}}, "1e9", "-5", "NaN", "true", "0x10", "2026-13-45", "9999-12-31",
        "0001-01-01", "approve", "correct", "void", {"cola": 2**70}, {"cola": -1}, {"": 1},
    ])


def body(rng: random.Random) -> dict[str, Any]:
    return {k: hostile(rng) for k in rng.sample(FIELDS, rng.randint(0, len(FIELDS)))}


def form_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, allow_nan=True)


async def test_hostile_forms_and_json_bodies_get_documented_answers_and_change_nothing_when_refused(web):  # noqa: F811
    rng = random.Random(20261126)
    s, csrf = await web.login("tech")
    try:
        routes = [r for r in action_routes(web) if (r["method"], r["path"]) not in SELF_SERVICE]
        assert routes
        for i in range(300):
            route = routes[i % len(routes)]
            path = concrete(route["path"])
            before = await web.counts()
            fields = body(rng)
            if path.startswith("/api/"):
                r = await s.post(path, json=fields, headers={"X-CSRF-Token": csrf}, allow_redirects=False)
            else:
                form = {k: form_value(v) for k, v in fields.items()}
                form["csrf"] = csrf
                r = await s.post(path, data=form, allow_redirects=False)
            text = await r.text()
            assert r.status in ALLOWED, (path, fields, r.status, text[:300])
            refused = r.status >= 400 or (r.status == 303 and "error" in r.headers.get("Location", ""))
            if refused and r.status != 429:
                after = await web.counts()
                for key in ("orders", "vend_journal", "stock_sum", "dispensed", "door_locked", "lockouts", "users"):
                    assert after[key] == before[key], (path, fields, key)
        # the daemon is still healthy after all of it
        r = await s.get("/api/v1/status")
        assert r.status == 200
    finally:
        await s.close()

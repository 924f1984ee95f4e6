"""HACCP page and CSV over real HTTP against the real daemon + simulators (the shared `web` rig)."""

from __future__ import annotations

import csv
import io

import pytest

from edge.clock import iso
from tests.e2e.test_web_security import web  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(90)


async def test_haccp_page_and_csv_show_hours_exceedances_and_lockouts(web):  # noqa: F811
    db = web.rig.daemon.db
    now = db.clock.wall()
    hour0 = now - now % 3600 - 2 * 3600  # two complete hours ago
    async with db.tx() as tx:
        for i in range(120):
            c = 7.5 if 60 <= i < 75 else 3.0  # fifteen warm minutes in the second hour
            await tx.execute(
                "INSERT OR REPLACE INTO telemetry_1min(minute, point, avg, min, max) VALUES (?,?,?,?,?)",
                (iso(hour0 + 60 * i), "fridge.cabinet_temp_c", c, c - 0.1, c + 0.1),
            )
        await tx.execute(
            "INSERT INTO lockouts(kind, started_at, reason, data) VALUES ('food_safety', ?, "
            "'above_limit', '{\"peak_c\": 7.6}')",
            (iso(hour0 + 3600 + 600),),
        )
    s, _ = await web.login("view")
    async with s:
        page = await s.get("/haccp?days=1")
        text = await page.text()
        got = await s.get("/haccp.csv?days=2")
        body = await got.text()
        bad = [(await s.get(f"/haccp?days={d}")).status for d in ("0", "401", "x", "-3")]
    assert page.status == 200 and got.status == 200 and bad == [400, 400, 400, 400]
    assert f'data-hour="{iso(hour0 + 3600)[:13]}" class="bad"' in text and "15 min" in text
    assert 'id="haccp-lockout-count">1<' in text and "still locked" in text
    assert (
        got.headers["Content-Type"].startswith("text/csv")
        and "attachment" in got.headers["Content-Disposition"]
    )
    rows = {r["hour_utc"]: r for r in csv.DictReader(io.StringIO(body))}
    warm = rows[iso(hour0 + 3600)[:13] + ":00Z"]
    assert warm["minutes"] == "60" and warm["minutes_above"] == "15" and warm["exceeded"] == "1"
    assert warm["lockouts_started"] == "1" and float(warm["max_c"]) == pytest.approx(7.6)
    assert rows[iso(hour0)[:13] + ":00Z"]["exceeded"] == "0"


async def test_haccp_needs_a_login(web):  # noqa: F811
    async with web.client() as s:
        page = await s.get("/haccp", allow_redirects=False)
        data = await s.get("/haccp.csv", allow_redirects=False)
    assert page.status in (302, 303, 401) and data.status in (302, 303, 401)


async def test_haccp_json_api(web):  # noqa: F811
    s, _ = await web.login("view")
    async with s:
        ok = await s.get("/api/v1/haccp?days=2")
        doc = await ok.json()
        bad = await s.get("/api/v1/haccp?days=0")
        err = await bad.json()
    assert ok.status == 200 and doc["period"]["days"] == 2 and doc["period"]["limit_c"] == 5.0
    assert set(doc["summary"]) == {"hours", "hours_exceeded", "minutes_above", "min_c", "max_c"}
    assert isinstance(doc["hours"], list) and bad.status == 400 and "error" in err

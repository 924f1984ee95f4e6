"""Price rules are signed config: the reference cloud validates a `pricing` object and signs it with
the machine's secret; the machine's config sink applies it only when the signature holds (a tampered
or unsigned one refuses the whole config and the old rules stay). Real refcloud over HTTP, real SQLite."""

from __future__ import annotations

import functools

import pytest

from edge.clock import ManualClock
from edge.ledger import pricing as ledger_pricing
from edge.ledger.db import LedgerDB
from edge.services.cloud import LedgerConfigSink
from sync import signing
from tests.integration.test_refcloud import DEMO, Cloud, cloud  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.timeout(30)
RULES = {
    "version": 1,
    "rules": [{"id": "cola-deal", "kind": "promotion", "skus": ["cola"], "fixed_price": 120}],
}


async def test_cloud_signs_pricing_and_the_machine_applies_only_what_it_signed(
    cloud: Cloud,  # noqa: F811
    tmp_path,
) -> None:
    secret = await cloud.register("m1")
    bad = dict(DEMO, pricing={"rules": [{"id": "x", "kind": "promotion", "percent_off": 500}]})
    status, doc = await cloud.admin("PUT", "/admin/machines/m1/config", bad)
    assert status == 400 and doc["error"] == "invalid_doc" and "percent_off" in doc["reason"]
    assert (await cloud.admin("PUT", "/admin/machines/m1/config", dict(DEMO, pricing=RULES)))[0] == 200
    status, cfg = await cloud.signed("m1", secret, "GET", "/v1/machines/m1/config")
    pricing = cfg["doc"]["pricing"]
    assert status == 200 and signing.verify_command(secret, pricing)

    db = await LedgerDB.open(str(tmp_path / "ledger.sqlite3"), ManualClock())
    try:
        sink = LedgerConfigSink(db, verify_pricing=functools.partial(signing.verify_command, secret))
        await sink.apply_config(cfg["version"], cfg["doc"])
        assert (await ledger_pricing.load(db))["rules"][0]["fixed_price"] == 120
        tampered = dict(cfg["doc"], pricing={**pricing, "rules": [dict(RULES["rules"][0], fixed_price=1)]})
        unsigned = dict(cfg["doc"], pricing=RULES)
        for doc in (tampered, unsigned):
            with pytest.raises(ValueError, match="bad_signature"):
                await sink.apply_config(cfg["version"] + 1, doc)
        assert (await ledger_pricing.load(db))["rules"][0]["fixed_price"] == 120  # the signed rules stay
        assert await sink.current_version() == cfg["version"]
    finally:
        await db.close()

"""Offline price rules at their boundaries: windows, mid-session starts, clock jumps both ways,
expired promotions and best-before, overlapping rules and their precedence, meal deals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.core import pricing as pr

T0 = 1_800_000_000.0  # UTC
H = 3600.0
DOC = {
    "version": 3,
    "rules": [
        {"id": "happy-hour", "kind": "time_of_day", "start": "16:00", "end": "18:00", "percent_off": 20},
        {
            "id": "night",
            "kind": "time_of_day",
            "start": "22:00",
            "end": "06:00",
            "percent_off": 10,
            "weekdays": [4, 5],
        },
        {"id": "fresh-2h", "kind": "near_expiry", "within_h": 2, "percent_off": 50, "skus": ["SAND"]},
        {
            "id": "promo-cola",
            "kind": "promotion",
            "fixed_price": 150,
            "skus": ["COLA"],
            "valid_from": T0,
            "valid_until": T0 + 24 * H,
        },
        {
            "id": "meal-deal",
            "kind": "bundle",
            "groups": [["SAND"], ["COLA", "WATER"]],
            "price": 400,
            "valid_from": T0,
            "valid_until": T0 + 48 * H,
        },
    ],
}
RULES = pr.RuleSet.from_doc(DOC)


def ctx(minute="12:00", weekday=2, utc=T0 + H, high_water=0.0) -> pr.Context:
    return pr.Context(int(minute[:2]) * 60 + int(minute[3:]), weekday, utc, high_water)


COLA = pr.Item("COLA", "A1", 250)
SAND = pr.Item("SAND", "D3", 450, best_before=T0 + 10 * H)


def test_list_price_when_nothing_applies():
    assert pr.price_item(RULES, pr.Item("WATER", "A2", 120), ctx()) == pr.Priced("WATER", "A2", 120, "")


def test_time_of_day_window_is_start_inclusive_end_exclusive():
    water = pr.Item("WATER", "A2", 120)
    assert pr.price_item(RULES, water, ctx("15:59")).rule_id == ""
    assert pr.price_item(RULES, water, ctx("16:00")) == pr.Priced("WATER", "A2", 96, "happy-hour")
    assert pr.price_item(RULES, water, ctx("17:59")).rule_id == "happy-hour"
    assert pr.price_item(RULES, water, ctx("18:00")).rule_id == ""


def test_window_wrapping_midnight_and_weekdays():
    water = pr.Item("WATER", "A2", 120)
    assert pr.price_item(RULES, water, ctx("23:30", weekday=4)).rule_id == "night"
    assert pr.price_item(RULES, water, ctx("05:59", weekday=5)).rule_id == "night"
    assert pr.price_item(RULES, water, ctx("23:30", weekday=2)).rule_id == ""  # not that day


def test_near_expiry_markdown_and_expired_goods():
    assert pr.price_item(RULES, SAND, ctx(utc=T0 + 7.9 * H)).rule_id == ""
    assert pr.price_item(RULES, SAND, ctx(utc=T0 + 8 * H)) == pr.Priced("SAND", "D3", 225, "fresh-2h")
    assert pr.price_item(RULES, SAND, ctx(utc=T0 + 10 * H)) == pr.Expired("SAND", "D3", T0 + 10 * H)


def test_promotion_window_and_an_expired_promotion():
    assert pr.price_item(RULES, COLA, ctx(utc=T0 - 1)).rule_id == ""
    assert pr.price_item(RULES, COLA, ctx(utc=T0)) == pr.Priced("COLA", "A1", 150, "promo-cola")
    assert pr.price_item(RULES, COLA, ctx(utc=T0 + 24 * H)).rule_id == ""  # ended: list price again


def test_backwards_clock_jump_does_not_resurrect_an_ended_promotion():
    after_end = T0 + 25 * H
    jumped_back = ctx(utc=T0 + 2 * H, high_water=after_end)  # NTP had shown 25 h; the RTC now says 2 h
    assert pr.price_item(RULES, COLA, jumped_back).rule_id == ""
    assert pr.price_item(RULES, COLA, ctx(utc=T0 + 2 * H, high_water=T0 + 3 * H)).rule_id == "promo-cola"


def test_forward_jump_ends_a_promotion_early_never_late():
    assert pr.price_item(RULES, COLA, ctx(utc=T0 + 30 * H)).rule_id == ""


def test_overlapping_rules_lowest_price_wins_and_ties_follow_kind_order():
    both = ctx("16:30", utc=T0 + H)  # happy hour (250 -> 200) and the cola promotion (150)
    assert pr.price_item(RULES, COLA, both) == pr.Priced("COLA", "A1", 150, "promo-cola")
    tie = pr.RuleSet.from_doc(
        {
            "rules": [
                {"id": "b-tod", "kind": "time_of_day", "start": "00:00", "end": "23:59", "fixed_price": 100},
                {"id": "z-promo", "kind": "promotion", "fixed_price": 100},
                {"id": "a-promo", "kind": "promotion", "percent_off": 60},
            ]
        }
    )
    assert pr.price_item(tie, COLA, ctx()) == pr.Priced("COLA", "A1", 100, "a-promo")  # 60 % off 250 = 100


def test_a_rule_never_raises_a_price():
    up = pr.RuleSet.from_doc({"rules": [{"id": "p", "kind": "promotion", "fixed_price": 999}]})
    assert pr.price_item(up, COLA, ctx()) == pr.Priced("COLA", "A1", 250, "")


def test_meal_deal_covers_the_dearest_lines_and_sums_to_its_price():
    basket = [pr.Item("WATER", "A2", 120), COLA, pr.Item("SAND", "D4", 450, best_before=T0 + 99 * H)]
    out = pr.price_basket(RULES, basket, ctx(utc=T0 + 30 * H))  # promotion over, bundle still live
    assert [p.rule_id for p in out] == ["", "meal-deal", "meal-deal"]
    assert out[1].unit_price + out[2].unit_price == 400 and out[0].unit_price == 120
    # no saving (the cola promotion and the markdown already make it cheaper): no bundle
    cheap = pr.price_basket(RULES, [COLA, SAND], ctx(utc=T0 + 8.5 * H))
    assert [p.rule_id for p in cheap] == ["promo-cola", "fresh-2h"]


def test_quote_is_honoured_on_the_monotonic_clock_whatever_the_wall_clock_does():
    shown = pr.price_item(RULES, pr.Item("WATER", "A2", 120), ctx("15:59"))
    q = pr.Quote(shown, mono_at=1000.0, ttl_s=120)
    # happy hour starts mid-session (16:00): the customer still pays what was shown
    assert q.honoured(1060.0) and q.priced.unit_price == 120
    assert not q.honoured(1121.0) and not q.honoured(999.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"rules": [{"id": "x", "kind": "promotion"}]},
        {"rules": [{"id": "x", "kind": "promotion", "percent_off": 10, "fixed_price": 5}]},
        {"rules": [{"id": "x", "kind": "promotion", "percent_off": 0}]},
        {"rules": [{"id": "x", "kind": "time_of_day", "start": "24:00", "end": "01:00", "percent_off": 5}]},
        {"rules": [{"id": "x", "kind": "time_of_day", "start": "01:00", "end": "01:00", "percent_off": 5}]},
        {"rules": [{"id": "x", "kind": "near_expiry", "within_h": 0, "percent_off": 5}]},
        {"rules": [{"id": "x", "kind": "promotion", "percent_off": 5, "valid_from": 10, "valid_until": 10}]},
        {"rules": [{"id": "x", "kind": "bundle", "groups": [["A"]], "price": 1}]},
        {
            "rules": [
                {"id": "x", "kind": "promotion", "percent_off": 5},
                {"id": "x", "kind": "promotion", "percent_off": 6},
            ]
        },
        {"rules": [{"id": "x", "kind": "surge", "percent_off": 5}]},
        {"rules": "nope"},
    ],
)
def test_invalid_documents_are_refused_whole(bad):
    with pytest.raises(pr.PricingInvalid):
        pr.RuleSet.from_doc(bad)


@given(st.integers(1, 100_000), st.integers(1, 100), st.integers(0, 1439), st.integers(0, 6))
def test_percent_off_stays_within_the_list_price(price, pct, minute, weekday):
    rules = pr.RuleSet.from_doc({"rules": [{"id": "p", "kind": "promotion", "percent_off": pct}]})
    got = pr.price_item(rules, pr.Item("X", "A1", price), pr.Context(minute, weekday, T0))
    assert isinstance(got, pr.Priced) and 0 <= got.unit_price <= price

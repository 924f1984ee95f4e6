"""The pure DEX renderer against a golden file (tests/unit/golden/dex_basic.txt)."""

from __future__ import annotations

import datetime as dt
import pathlib

from edge.core.dex import DexFigures, EventFigure, Selection, Split, Tally, render

GOLDEN = pathlib.Path(__file__).parent / "golden" / "dex_basic.txt"
AT = dt.datetime(2026, 12, 2, 6, 30, 5, tzinfo=dt.UTC)


def figures() -> DexFigures:
    a1 = Selection("A1", 150, paid=Split(Tally(3, 450), Tally(1, 150)), test=Split(Tally(1, 0), Tally(1, 0)),
                   last_sale_at=AT)
    a2 = Selection("A2", 0, free=Split(Tally(2, 0), Tally(0, 0)), sold_out=True)
    return DexFigures("SN-1", "vendedge", "ctl*1\r\n", "0.9", "EUR", 2, (a1, a2),
                      (EventFigure("jam", 2, 1, AT, True), EventFigure("door")),
                      Split(Tally(1), Tally(0)), 4, AT)


def test_render_matches_golden():
    text = render(figures(), AT, resets=True)
    assert text.encode("ascii") == GOLDEN.read_bytes()


def test_separator_and_line_breaks_in_names_cannot_break_segments():
    text = render(figures(), AT)
    assert "ctl1" in text and all(line.count("*") >= 1 for line in text.split("\r\n") if line)
    assert "VA1*450*3*150*1\r\n" in text and "VA3*0*2*0*0\r\n" in text and "EA7*0*1\r\n" in text


def test_id4_decimal_places_follow_the_currency():
    from dataclasses import replace

    from edge.core.dex import minor_units
    assert (minor_units("JPY"), minor_units("eur")) == (0, 2)
    text = render(replace(figures(), currency="JPY", decimals=minor_units("JPY")), AT)
    assert "\r\nID4*0*392*JPY\r\n" in text

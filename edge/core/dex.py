"""DEX / EVA-DTS audit text from ledger figures. Pure: figures and time in, text out.

The layout follows EVA-DTS 6.1 as described in docs/protocols/dex.md: a DXS/ST … SE/DXE envelope,
data segments of `*`-separated elements, one segment per line (CR LF). Money is integer minor units
(ID4 states the decimal places), counts are plain integers. No CA blocks: this machine takes no cash.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

SEPARATOR = "*"
EOL = "\r\n"
DEX_VERSION = "V1/1"  # DXS04: the transmission control standard version (see docs/protocols/dex.md)
ISO_4217_NUMERIC = {"EUR": 978, "USD": 840, "GBP": 826, "CHF": 756, "SEK": 752, "NOK": 578, "DKK": 208,
                    "PLN": 985, "CZK": 203, "HUF": 348, "JPY": 392, "CAD": 124, "AUD": 36}

ZERO_DECIMAL = frozenset({"JPY", "KRW", "ISK", "CLP", "VND"})  # ISO 4217 currencies without minor units


def minor_units(currency: str) -> int:
    """Decimal places of a currency's minor unit (ID401)."""
    return 0 if currency.upper() in ZERO_DECIMAL else 2


# EA event identifiers (EA101 / EA201); see the field table in docs/protocols/dex.md
EVENT_CODES = {"jam": "EJJ", "door": "EGS", "temperature": "EJK", "power": "EJL"}


@dataclass(frozen=True)
class Tally:
    """A count and its value in minor units."""

    count: int = 0
    value: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.count + other.count, self.value + other.value)


@dataclass(frozen=True)
class Split:
    """The same figure since initialisation and since the last interim read."""

    init: Tally = Tally()
    interim: Tally = Tally()

    def __add__(self, other: Split) -> Split:
        return Split(self.init + other.init, self.interim + other.interim)


@dataclass(frozen=True)
class Selection:
    """One selection (a spiral slot): price now, paid/test/free vends, last sale, sold out now."""

    selection: str
    price: int
    paid: Split = Split()
    test: Split = Split()
    free: Split = Split()
    last_sale_at: dt.datetime | None = None
    sold_out: bool = False


@dataclass(frozen=True)
class EventFigure:
    """An event family (jam, door, temperature, power): how often, the last time, still active."""

    name: str
    init: int = 0
    interim: int = 0
    last_at: dt.datetime | None = None
    active: bool = False


@dataclass(frozen=True)
class DexFigures:
    """Everything a DEX read reports; built by edge.ledger.dex from the ledger."""

    machine_serial: str
    machine_model: str
    controller_id: str
    software_version: str
    currency: str
    decimals: int
    selections: tuple[Selection, ...] = ()
    events: tuple[EventFigure, ...] = field(default_factory=tuple)
    power_outages: Split = Split()  # counts only: EA7
    interim_reads: int = 0  # reads with reset before this one: EA3
    last_interim_at: dt.datetime | None = None


def _clean(value: str, limit: int = 20) -> str:
    """An element never contains the separator, a line break or non-ASCII."""
    text = "".join(c for c in value if c.isascii() and c.isprintable() and c != SEPARATOR)
    return text[:limit]


def _date(at: dt.datetime | None) -> tuple[str, str]:
    if at is None:
        return "", ""
    at = at.astimezone(dt.UTC)
    return at.strftime("%Y%m%d"), at.strftime("%H%M%S")


def _seg(*elements: object) -> str:
    parts = [str(e) for e in elements]
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return SEPARATOR.join(parts)


def totals(figures: DexFigures) -> tuple[Split, Split, Split]:
    """(paid, test, free) over every selection: what VA1, VA2 and VA3 report."""
    paid, test, free = Split(), Split(), Split()
    for s in figures.selections:
        paid, test, free = paid + s.paid, test + s.test, free + s.free
    return paid, test, free


def _va(tag: str, split: Split) -> str:
    return _seg(tag, split.init.value, split.init.count, split.interim.value, split.interim.count)


def body(figures: DexFigures, now: dt.datetime, *, resets: bool = False) -> list[str]:
    """The data segments between ST and SE."""
    currency = ISO_4217_NUMERIC.get(figures.currency.upper(), 0)
    segs = [_seg("ID1", _clean(figures.machine_serial), _clean(figures.machine_model)),
            _seg("ID4", figures.decimals, currency, _clean(figures.currency.upper(), 3)),
            _seg("CB1", _clean(figures.controller_id), _clean(figures.machine_model),
                 _clean(figures.software_version))]
    paid, test, free = totals(figures)
    segs += [_va("VA1", paid), _va("VA2", test), _va("VA3", free)]
    for s in figures.selections:
        day, time = _date(s.last_sale_at)
        segs += [_seg("PA1", _clean(s.selection), s.price),
                 _seg("PA2", s.paid.init.count, s.paid.init.value, s.paid.interim.count, s.paid.interim.value),
                 _seg("PA3", s.test.init.count, s.test.init.value, s.test.interim.count, s.test.interim.value),
                 _seg("PA4", s.free.init.count, s.free.init.value, s.free.interim.count, s.free.interim.value),
                 _seg("PA5", day, time, int(s.sold_out))]
    for e in figures.events:
        code = EVENT_CODES[e.name]
        day, time = _date(e.last_at)
        if e.last_at is not None:
            segs.append(_seg("EA1", code, day, time))
        segs.append(_seg("EA2", code, e.init, e.interim, int(e.active)))
    segs.append(_seg("EA7", figures.power_outages.interim.count, figures.power_outages.init.count))
    day, time = _date(now)
    last_day, last_time = _date(figures.last_interim_at)
    segs.append(_seg("EA3", figures.interim_reads + int(resets), day, time, "", last_day, last_time))
    return segs


def render(figures: DexFigures, now: dt.datetime, *, resets: bool = False, comm_id: str = "") -> str:
    """The whole transmission: DXS, ST, data, G85, SE (its count includes ST and SE), DXE.
    `resets`: this read is an interim read (EA3 counts it)."""
    segs = ["ST*001*0001", *body(figures, now, resets=resets)]
    segs.append(_seg("G85", _crc16_hex(EOL.join(segs) + EOL)))
    segs.append(_seg("SE", len(segs) + 1, "0001"))
    head = _seg("DXS", _clean(comm_id or figures.controller_id, 10), "VA", DEX_VERSION, 1)
    return EOL.join([head, *segs, _seg("DXE", 1, 1)]) + EOL


def _crc16_hex(text: str) -> str:
    """CRC-16 (poly 0xA001, init 0, reflected — 'CRC-16/ARC') over the ST…data text, 4 hex digits."""
    crc = 0
    for b in text.encode("ascii"):
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return f"{crc:04X}"

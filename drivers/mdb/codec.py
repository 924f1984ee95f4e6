"""Pure codec for an MDB cashless reader behind a Qibixx MDB-USB / MDB Pi Hat adapter.

Two layers, both bytes in / typed values out (see docs/protocols/mdb.md):

* the adapter's ASCII line protocol ("Generic Master" command group, ``drivers/mdb/lines.py``,
  re-exported here): the host writes ``R,<cmd hex>[,<data hex>]\\n`` and the adapter answers
  ``p,ACK``, ``p,NACK`` or ``p,<hex>`` (the peripheral's data, checksum already checked and ACKed on
  the bus by the adapter);
* the MDB cashless device's commands and responses (MDB/ICP 4.x, cashless device #1 at 0x10):
  what goes inside ``R,...`` and what comes back in ``p,<hex>``.

No I/O, no clock, no logging; the only exception raised is ``ProtocolError``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.errors import ProtocolError
from drivers.mdb.lines import (
    MAX_LINE,
    AdapterLine,
    AdapterReply,
    LineReader,
    PeripheralReply,
    decode_line,
    encode_line,
    encode_reply,
)

# the line layer (drivers/mdb/lines.py) is part of this module's API: the driver, the simulator and the
# tests read every wire format from here
__all__ = [
    "ADDRESS", "FEATURE_ALWAYS_IDLE", "MAX_LINE", "AdapterLine", "AdapterReply", "BeginSession", "cash_sale",
    "Cmd", "Command", "decode_command", "decode_line", "decode_responses", "DisplayRequest", "encode_command",
    "encode_line", "encode_reply", "encode_response", "expansion_enable_features", "expansion_request_id",
    "from_scaled", "LineReader", "Malfunction", "OutOfSequence", "PeripheralId", "PeripheralReply", "poll",
    "reader_disable", "reader_enable", "ReaderConfig", "reset", "Resp", "Response", "session_complete",
    "setup_config", "setup_prices", "Simple", "Sub", "to_scaled", "vend_cancel", "vend_failure",
    "vend_request", "vend_success", "VendApproved",
]

ADDRESS = 0x10  # cashless device #1
FEATURE_ALWAYS_IDLE = 1 << 5  # Level 3 optional feature bit (Peripheral ID Z30-Z33, bit 5)


class Cmd(enum.IntEnum):
    """Address byte of each command: ADDRESS | command number."""

    RESET = ADDRESS | 0x00
    SETUP = ADDRESS | 0x01
    POLL = ADDRESS | 0x02
    VEND = ADDRESS | 0x03
    READER = ADDRESS | 0x04
    EXPANSION = ADDRESS | 0x07


class Sub(enum.IntEnum):
    """Sub-commands (first data byte) of SETUP, VEND, READER and EXPANSION."""

    SETUP_CONFIG = 0x00
    SETUP_PRICES = 0x01
    VEND_REQUEST = 0x00
    VEND_CANCEL = 0x01
    VEND_SUCCESS = 0x02
    VEND_FAILURE = 0x03
    SESSION_COMPLETE = 0x04
    CASH_SALE = 0x05
    READER_DISABLE = 0x00
    READER_ENABLE = 0x01
    READER_CANCEL = 0x02
    EXPANSION_ID = 0x00
    EXPANSION_FEATURES = 0x04


@dataclass(frozen=True)
class Command:
    """One MDB command: the address byte and its data bytes (the adapter adds mode bit and checksum)."""

    cmd: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return Cmd(self.cmd).name + (f"/{self.data[0]:02X}" if self.data else "")


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} outside 0..65535")
    return value.to_bytes(2, "big")


def _text(value: str, size: int) -> bytes:
    raw = value.encode("ascii", "replace")[:size]
    return raw.ljust(size, b" ")


def reset() -> Command:
    return Command(Cmd.RESET)


def poll() -> Command:
    return Command(Cmd.POLL)


def setup_config(vmc_level: int, columns: int = 0, rows: int = 0, display: int = 0) -> Command:
    """SETUP Config Data: tells the reader the VMC's feature level and display size."""
    if vmc_level not in (1, 2, 3):
        raise ValueError(f"VMC feature level {vmc_level} not 1..3")
    return Command(Cmd.SETUP, bytes((Sub.SETUP_CONFIG, vmc_level, columns, rows, display)))


def setup_prices(max_price: int, min_price: int) -> Command:
    return Command(
        Cmd.SETUP, bytes((Sub.SETUP_PRICES,)) + _u16(max_price, "max price") + _u16(min_price, "min price")
    )


def vend_request(price: int, item: int) -> Command:
    return Command(Cmd.VEND, bytes((Sub.VEND_REQUEST,)) + _u16(price, "price") + _u16(item, "item"))


def vend_cancel() -> Command:
    return Command(Cmd.VEND, bytes((Sub.VEND_CANCEL,)))


def vend_success(item: int) -> Command:
    return Command(Cmd.VEND, bytes((Sub.VEND_SUCCESS,)) + _u16(item, "item"))


def vend_failure() -> Command:
    return Command(Cmd.VEND, bytes((Sub.VEND_FAILURE,)))


def session_complete() -> Command:
    return Command(Cmd.VEND, bytes((Sub.SESSION_COMPLETE,)))


def cash_sale(price: int, item: int) -> Command:
    return Command(Cmd.VEND, bytes((Sub.CASH_SALE,)) + _u16(price, "price") + _u16(item, "item"))


def reader_enable() -> Command:
    return Command(Cmd.READER, bytes((Sub.READER_ENABLE,)))


def reader_disable() -> Command:
    return Command(Cmd.READER, bytes((Sub.READER_DISABLE,)))


def expansion_request_id(manufacturer: str, serial: str, model: str, version: int) -> Command:
    """EXPANSION Request ID: the VMC identifies itself; the reader answers with its Peripheral ID."""
    body = _text(manufacturer, 3) + _text(serial, 12) + _text(model, 12) + _u16(version, "version")
    return Command(Cmd.EXPANSION, bytes((Sub.EXPANSION_ID,)) + body)


def expansion_enable_features(bits: int) -> Command:
    """EXPANSION Optional Feature Enabled (Level 3): the features the VMC wants, a 32-bit mask."""
    return Command(Cmd.EXPANSION, bytes((Sub.EXPANSION_FEATURES,)) + bits.to_bytes(4, "big"))


# ---- responses (what POLL and some commands return) -------------------------------------------


class Resp(enum.IntEnum):
    JUST_RESET = 0x00
    READER_CONFIG = 0x01
    DISPLAY_REQUEST = 0x02
    BEGIN_SESSION = 0x03
    SESSION_CANCEL_REQUEST = 0x04
    VEND_APPROVED = 0x05
    VEND_DENIED = 0x06
    END_SESSION = 0x07
    CANCELLED = 0x08
    PERIPHERAL_ID = 0x09
    MALFUNCTION = 0x0A
    OUT_OF_SEQUENCE = 0x0B


@dataclass(frozen=True)
class Simple:
    """A one-byte response: JUST_RESET, SESSION_CANCEL_REQUEST, VEND_DENIED, END_SESSION, CANCELLED."""

    code: Resp


@dataclass(frozen=True)
class ReaderConfig:
    level: int
    country: int  # ISO 4217 numeric (0x1xxx) or telephone code, as the reader reports it
    scale: int
    decimals: int
    max_response_s: int
    options: int


@dataclass(frozen=True)
class DisplayRequest:
    seconds_tenths: int
    text: bytes


@dataclass(frozen=True)
class BeginSession:
    funds: int  # scaled; 0xFFFF = unknown (e.g. a credit card)


@dataclass(frozen=True)
class VendApproved:
    amount: int  # scaled


@dataclass(frozen=True)
class PeripheralId:
    manufacturer: str
    serial: str
    model: str
    version: int
    features: int = 0  # Level 3 only

    @property
    def always_idle(self) -> bool:
        return bool(self.features & FEATURE_ALWAYS_IDLE)


@dataclass(frozen=True)
class Malfunction:
    error: int


@dataclass(frozen=True)
class OutOfSequence:
    status: int | None = None  # Level 2+ adds the reader's state


Response = (
    Simple
    | ReaderConfig
    | DisplayRequest
    | BeginSession
    | VendApproved
    | PeripheralId
    | Malfunction
    | OutOfSequence
)

_SIMPLE = (Resp.JUST_RESET, Resp.SESSION_CANCEL_REQUEST, Resp.VEND_DENIED, Resp.END_SESSION, Resp.CANCELLED)


def _length(code: Resp, level: int, rest: int) -> int:
    """Bytes one response of ``code`` takes at feature ``level`` (``rest`` = bytes left, code included)."""
    if code in _SIMPLE:
        return 1
    return {
        Resp.READER_CONFIG: 8,
        Resp.DISPLAY_REQUEST: rest,  # its text runs to the end of the block
        Resp.BEGIN_SESSION: 10 if level >= 2 else 3,
        Resp.VEND_APPROVED: 3,
        Resp.PERIPHERAL_ID: 34 if level >= 3 and rest >= 34 else 30,
        Resp.MALFUNCTION: 2,
        Resp.OUT_OF_SEQUENCE: 2 if level >= 2 and rest >= 2 else 1,
    }[code]


def _one(code: Resp, b: bytes) -> Response:
    if code in _SIMPLE:
        return Simple(code)
    if code is Resp.READER_CONFIG:
        return ReaderConfig(
            level=b[1],
            country=int.from_bytes(b[2:4], "big"),
            scale=b[4],
            decimals=b[5],
            max_response_s=b[6],
            options=b[7],
        )
    if code is Resp.DISPLAY_REQUEST:
        return DisplayRequest(b[1] if len(b) > 1 else 0, bytes(b[2:]))
    if code is Resp.BEGIN_SESSION:
        return BeginSession(int.from_bytes(b[1:3], "big"))
    if code is Resp.VEND_APPROVED:
        return VendApproved(int.from_bytes(b[1:3], "big"))
    if code is Resp.PERIPHERAL_ID:
        text = [b[i:j].decode("ascii", "replace").strip() for i, j in ((1, 4), (4, 16), (16, 28))]
        features = int.from_bytes(b[30:34], "big") if len(b) >= 34 else 0
        return PeripheralId(text[0], text[1], text[2], int.from_bytes(b[28:30], "big"), features)
    if code is Resp.MALFUNCTION:
        return Malfunction(b[1])
    return OutOfSequence(b[1] if len(b) > 1 else None)


def decode_responses(data: bytes, level: int = 1) -> list[Response]:
    """Split one peripheral data block into its responses (a POLL may carry several)."""
    out: list[Response] = []
    i = 0
    while i < len(data):
        try:
            code = Resp(data[i])
        except ValueError:
            raise ProtocolError(f"unknown cashless response 0x{data[i]:02X} in {data.hex()}") from None
        size = _length(code, level, len(data) - i)
        if i + size > len(data):
            raise ProtocolError(f"{code.name} needs {size} bytes, {len(data) - i} left in {data.hex()}")
        out.append(_one(code, data[i : i + size]))
        i += size
    return out


def encode_response(resp: Response, level: int = 1) -> bytes:
    """The peripheral's side (simulator, golden vectors): one response as bytes."""
    if isinstance(resp, Simple):
        return bytes((resp.code,))
    if isinstance(resp, ReaderConfig):
        return (
            bytes((Resp.READER_CONFIG, resp.level))
            + _u16(resp.country, "country")
            + bytes((resp.scale, resp.decimals, resp.max_response_s, resp.options))
        )
    if isinstance(resp, DisplayRequest):
        return bytes((Resp.DISPLAY_REQUEST, resp.seconds_tenths)) + resp.text
    if isinstance(resp, BeginSession):
        tail = b"\xff\xff\xff\xff\x00\x00\x00" if level >= 2 else b""  # media id unknown, type/data 0
        return bytes((Resp.BEGIN_SESSION,)) + _u16(resp.funds, "funds") + tail
    if isinstance(resp, VendApproved):
        return bytes((Resp.VEND_APPROVED,)) + _u16(resp.amount, "amount")
    if isinstance(resp, PeripheralId):
        body = (
            _text(resp.manufacturer, 3)
            + _text(resp.serial, 12)
            + _text(resp.model, 12)
            + _u16(resp.version, "version")
        )
        return bytes((Resp.PERIPHERAL_ID,)) + body + (resp.features.to_bytes(4, "big") if level >= 3 else b"")
    if isinstance(resp, Malfunction):
        return bytes((Resp.MALFUNCTION, resp.error))
    return bytes((Resp.OUT_OF_SEQUENCE,)) + (bytes((resp.status or 0,)) if level >= 2 else b"")


# ---- money ------------------------------------------------------------------------------------


def to_scaled(minor: int, minor_digits: int, scale: int, decimals: int) -> int:
    """Minor units of the currency -> the reader's scaled value (value = scaled * scale / 10**decimals).

    Raises ValueError when the amount cannot be said exactly on the bus or exceeds 16 bits."""
    if scale < 1:
        raise ValueError(f"scale factor {scale} < 1")
    num = minor * int(10**decimals)
    den = scale * int(10**minor_digits)
    if num % den:
        raise ValueError(
            f"{minor} minor units are not a multiple of the reader's unit "
            f"(scale {scale}, {decimals} decimals)"
        )
    scaled = num // den
    if not 0 <= scaled <= 0xFFFE:  # 0xFFFF means "unknown" in several responses
        raise ValueError(f"{minor} minor units do not fit the reader's 16-bit price")
    return scaled


def from_scaled(scaled: int, minor_digits: int, scale: int, decimals: int) -> int:
    """The reader's scaled value -> minor units (exact for every value ``to_scaled`` produces)."""
    return scaled * scale * int(10**minor_digits) // int(10**decimals)


# ---- the adapter's ASCII line protocol --------------------------------------------------------


def encode_command(command: Command) -> bytes:
    """``R,<cmd>[,<data>]\\n``: hex, upper case, two digits per byte."""
    return encode_line(f"R,{command.cmd:02X}" + (f",{command.data.hex().upper()}" if command.data else ""))


def decode_command(line: str) -> Command:
    """The adapter's side (simulator): ``R,<cmd>[,<data>]`` -> Command."""
    parts = line.split(",")
    if parts[0] != "R" or len(parts) not in (2, 3):
        raise ProtocolError(f"not a request line: {line!r}")
    try:
        cmd = int(parts[1], 16)
        data = bytes.fromhex(parts[2]) if len(parts) == 3 else b""
    except ValueError:
        raise ProtocolError(f"bad hex in request {line!r}") from None
    if not 0 <= cmd <= 0xFF:
        raise ProtocolError(f"address byte out of range in {line!r}")
    return Command(cmd, data)

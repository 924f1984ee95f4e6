"""The Qibixx adapter's ASCII line protocol ("Generic Master" command group), pure.

The host writes ``R,<cmd hex>[,<data hex>]\\n`` (built from a ``Command`` in codec.py) and other
lines such as ``M,1``; the adapter answers ``p,ACK``, ``p,NACK`` or ``p,<hex>`` (the peripheral's
data, checksum already checked on the bus) and its own lines (``m,ACK``, ``v,...``, ``x,...``).
No I/O, no clock, no logging; the only exception raised is ``ProtocolError``. See docs/protocols/mdb.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import ProtocolError

MAX_LINE = 512  # longest adapter line we accept (a Level 3 Peripheral ID is 34 bytes = 68 hex digits)


def encode_line(text: str) -> bytes:
    """Any other host line (``V``, ``M,1``, ``R,RESET``)."""
    return (text + "\n").encode("ascii")


@dataclass(frozen=True)
class PeripheralReply:
    """A ``p,...`` line: ACK, NACK (no answer on the bus) or the peripheral's data."""

    ack: bool = False
    nack: bool = False
    data: bytes = b""


@dataclass(frozen=True)
class AdapterLine:
    """Any other adapter line, split at commas (``v,<version>``, ``m,ACK``, ``x,...`` errors)."""

    prefix: str
    fields: tuple[str, ...]


AdapterReply = PeripheralReply | AdapterLine


def decode_line(line: str) -> AdapterReply:
    """One adapter line (without its line end) -> a typed reply."""
    prefix, _, rest = line.partition(",")
    if not prefix or not _:
        raise ProtocolError(f"adapter line without a prefix: {line!r}")
    if prefix != "p":
        return AdapterLine(prefix, tuple(rest.split(",")))
    if rest == "ACK":
        return PeripheralReply(ack=True)
    if rest == "NACK":
        return PeripheralReply(nack=True)
    try:
        data = bytes.fromhex(rest)
    except ValueError:
        raise ProtocolError(f"bad hex in peripheral reply {line!r}") from None
    if not data:
        raise ProtocolError(f"empty peripheral reply {line!r}")
    return PeripheralReply(data=data)


def encode_reply(reply: PeripheralReply) -> bytes:
    """The adapter's side (simulator): a ``p,...`` line."""
    body = "ACK" if reply.ack else "NACK" if reply.nack else reply.data.hex().upper()
    return f"p,{body}\n".encode("ascii")


class LineReader:
    """Splits a byte stream into lines (``\\n``, a trailing ``\\r`` dropped); counts what it throws away."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.garbage_bytes = 0

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines: list[str] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:  # no line end in sight: noise, drop it
                    self.garbage_bytes += len(self._buf)
                    self._buf.clear()
                return lines
            raw = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[: end + 1]
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                self.garbage_bytes += len(raw) + 1
                continue
            if text and text.isprintable():
                lines.append(text)
            elif text:
                self.garbage_bytes += len(raw) + 1

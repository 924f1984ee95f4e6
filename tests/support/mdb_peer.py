"""A second, minimal MDB reader-behind-an-adapter, written from the documents alone.

Sources: Qibixx "Generic Master" API (docs.qibixx.com/mdb-products/api-generic-master: the host
sends ``R,xx,yyyy``, xx the MDB address+command byte and yyyy the data, both hex two digits per
byte; the interface answers ``p,ACK``, ``p,NACK`` or ``p,YYYY``; ``M,1`` starts master mode and is
answered ``m,ACK``; 115200 8N1, one command per line)
and the MDB/ICP cashless device chapter (RESET 10, SETUP 11, POLL 12, VEND 13, READER 14,
EXPANSION 17; responses 00 JUST RESET, 01 READER CONFIG, 03 BEGIN SESSION, 05 VEND APPROVED,
06 VEND DENIED, 07 END SESSION, 09 PERIPHERAL ID, 0B OUT OF SEQUENCE).

It does not import ``drivers.mdb`` or ``hw_sim``: where our driver and simulator share a misreading,
this peer disagrees. It is strict: a line that breaks the grammar above is answered ``p,NACK`` and
recorded in ``violations``. It runs in a thread on one end of a socat pty pair (pyserial).
"""

from __future__ import annotations

import re
import threading

import serial

LINE = re.compile(r"^R,([0-9A-F]{2})(?:,((?:[0-9A-F]{2})+))?$")


class PeerReader:
    """Level 1 cashless device #1: inactive → disabled → enabled → session → vend → session → enabled."""

    def __init__(self, port: str, *, approve: bool = True) -> None:
        self.approve = approve
        self.lines: list[str] = []
        self.violations: list[str] = []
        self.captured: list[int] = []  # items
        self.refunded = 0
        self.cash_sales: list[tuple[int, int]] = []
        self.state = "inactive"
        self._queue: list[str] = ["00"]  # JUST RESET after power-up
        self._vend: tuple[int, int] | None = None
        self._ser = serial.Serial(port, baudrate=115200, timeout=0.05)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mdb-peer", daemon=True)

    def start(self) -> PeerReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._ser.close()

    def tap(self) -> None:
        """A card: BEGIN SESSION with funds unknown (FFFF)."""
        with self._lock:
            if self.state == "enabled":
                self.state = "session"
                self._queue.append("03FFFF")

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            buf += self._ser.read(256)
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode("ascii", "replace")
                with self._lock:
                    self.lines.append(line)
                    reply = "m,ACK" if line == "M,1" else f"p,{self._answer(line)}"  # M,1: master mode on
                self._ser.write(f"{reply}\n".encode())

    def _answer(self, line: str) -> str:
        m = LINE.match(line)
        if not m:
            self.violations.append(line)
            return "NACK"
        cmd, data = int(m.group(1), 16), bytes.fromhex(m.group(2) or "")
        if cmd == 0x10:
            self.state, self._queue, self._vend = "inactive", ["00"], None
            return "ACK"
        if cmd == 0x12:
            return self._queue.pop(0) if self._queue else "ACK"
        if cmd == 0x11 and data[:1] == b"\x00" and len(data) == 5:
            self.state = "disabled"
            # READER CONFIG: level 1, country 1978 (EUR), scale 1, 2 decimals, 5 s, no options
            return "010119780102" + "0500"
        if cmd == 0x11 and data[:1] == b"\x01" and len(data) == 5:
            return "ACK"
        if cmd == 0x17 and data[:1] == b"\x00" and len(data) == 30:
            return (
                "09"
                + b"PEE".hex().upper()
                + b"000000000007".hex().upper()
                + b"peer-reader ".hex().upper()
                + "0001"
            )
        if cmd == 0x14 and data == b"\x01" and self.state == "disabled":
            self.state = "enabled"
            return "ACK"
        if cmd == 0x13:
            return self._vend_cmd(data)
        return "0B"

    def _vend_cmd(self, data: bytes) -> str:
        sub = data[0] if data else -1
        if sub == 0 and len(data) == 5 and self.state == "session":
            price, item = int.from_bytes(data[1:3], "big"), int.from_bytes(data[3:5], "big")
            self.state = "vend"
            if self.approve:
                self._vend = (item, price)
                self._queue.append("05" + data[1:3].hex().upper())
            else:
                self.state = "session"
                self._queue.append("06")
            return "ACK"
        if sub == 2 and len(data) == 3 and self.state == "vend" and self._vend:
            self.captured.append(int.from_bytes(data[1:3], "big"))
            self.state, self._vend = "session", None
            return "ACK"
        if sub == 3 and len(data) == 1 and self.state == "vend":
            self.refunded += 1
            self.state, self._vend = "session", None
            return "ACK"
        if sub == 4 and len(data) == 1 and self.state == "session":
            self.state = "enabled"
            self._queue.append("07")
            return "ACK"
        if sub == 5 and len(data) == 5:
            self.cash_sales.append((int.from_bytes(data[3:5], "big"), int.from_bytes(data[1:3], "big")))
            return "ACK"
        return "0B"

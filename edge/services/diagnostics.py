"""What the Devices page shows beyond counters: the serial log decoded, the board's firmware, the
network, the payment reader. Each reads what exists and says "unknown" for what does not.

Frames are decoded with the vend-board codec's public ``decode(bytes) -> (used, frame)``; anything it
cannot read (line noise, a protocol this build does not know) is shown as such, never an error.
Network state comes from Linux sysfs (``/sys/class/net``) and the SIOCGIFADDR ioctl: stdlib only.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import ipaddress
import pathlib
import socket
import struct
from typing import TYPE_CHECKING, Any

from drivers.errors import ProtocolError
from drivers.vend_board import VendBoard, codec

if TYPE_CHECKING:
    from edge.services.payment_mdb import MdbPayment

SIOCGIFADDR = 0x8915
NET_ROOT = "/sys/class/net"
# fields whose integer values are codes the reader knows by name
NAMED: dict[str, type[enum.IntEnum]] = {
    "outcome": codec.ErrorCode,
    "error": codec.ErrorCode,
    "state": codec.VendState,
}


def decode_frame(hex_text: str) -> dict[str, Any]:
    """One logged frame as {msg, seq, detail}: ``VendDone``, 7, ``slot=A3 outcome=JAM motor_ms=820``."""
    try:
        raw = bytes.fromhex(hex_text)
        used, frame = codec.decode(raw)
    except (ProtocolError, ValueError, TypeError, IndexError, struct.error) as exc:
        return {"msg": "undecodable", "seq": None, "detail": f"{type(exc).__name__}: {exc}"[:160]}
    if frame is None:
        return {"msg": "noise" if used else "partial", "seq": None, "detail": f"{len(raw)} bytes"}
    fields = dataclasses.asdict(frame) if dataclasses.is_dataclass(frame) else {}
    parts = [f"{k}={_show(k, v)}" for k, v in fields.items() if k not in ("seq",)]
    return {"msg": type(frame).__name__, "seq": fields.get("seq"), "detail": " ".join(parts)}


def _show(key: str, value: Any) -> str:
    names = NAMED.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and names is not None:
        try:
            return names(value).name
        except ValueError:
            return str(value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "{}"
    return str(value)


def board_info(board: VendBoard, decoded: list[dict[str, Any]]) -> dict[str, Any]:
    """Firmware, protocol version and boot id from the last handshake, else from the last status reply
    in the log; "unknown" when neither exists."""
    info = board.info
    out = {
        "firmware": "unknown",
        "protocol": "unknown",
        "boot": "unknown",
        "incompatible": board.incompatible or "",
    }
    if info is not None:
        out.update({"firmware": str(info.firmware), "protocol": str(info.version), "boot": str(info.boot)})
        return out
    for f in reversed(decoded):
        if "firmware=" in f["detail"]:
            out["firmware"] = f["detail"].split("firmware=", 1)[1].split(" ", 1)[0]
            break
    return out


def network_state(root: str = NET_ROOT) -> list[dict[str, Any]]:
    """Every network interface but loopback: {name, link (up/down/unknown), carrier, ipv4, speed_mbps}."""
    base = pathlib.Path(root)
    try:
        names = sorted(p.name for p in base.iterdir())
    except OSError:
        return []
    out = []
    for name in names:
        if name == "lo":
            continue
        out.append(
            {
                "name": name,
                "link": _read(base / name / "operstate") or "unknown",
                "carrier": _read(base / name / "carrier") == "1",
                "ipv4": _ipv4(name),
                "speed_mbps": _int(_read(base / name / "speed")),
            }
        )
    return out


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:  # sysfs answers EINVAL for speed on a link that is down
        return ""


def _int(text: str) -> int | None:
    try:
        v = int(text)
    except ValueError:
        return None
    return v if v > 0 else None


def _ipv4(ifname: str) -> str | None:
    """The interface's IPv4 address (SIOCGIFADDR), or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    return str(ipaddress.IPv4Address(packed[20:24]))


def payment_state(svc: MdbPayment | None) -> dict[str, Any]:
    """The payment reader's state from its service's `status()` when the machine has one."""
    if svc is None:
        return {"state": "unknown", "detail": "no payment device on this machine", "last_error": ""}
    st = svc.status()
    state = st.get("state") or ("online" if st.get("online") else "offline" if "online" in st else "unknown")
    detail = " ".join(
        f"{k}={v}"
        for k, v in sorted(st.items())
        if k not in ("state", "online", "last_error") and isinstance(v, (str, int, float, bool))
    )
    return {"state": str(state), "detail": detail[:300], "last_error": str(st.get("last_error") or "")[:300]}

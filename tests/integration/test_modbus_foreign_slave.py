"""The Modbus hub against a slave we did not write: modbus_tk's RTU server on a socat pty pair.

Our simulator and our hub share one reading of the protocol; modbus_tk does not. Its request hook
lets the slave answer with a well-formed frame (valid CRC) that is the wrong answer — another
function code, too few registers — which is what a confused gateway or firmware does in the field.
"""

import shutil
import threading
from collections.abc import Iterator

import pytest

pytest.importorskip("modbus_tk")
import modbus_tk.defines as mb  # noqa: E402
import serial  # noqa: E402
from modbus_tk import hooks, modbus_rtu  # noqa: E402

from drivers.modbus import ModbusHub, Point, RegisterMap  # noqa: E402
from hw_sim.modbus.link import PtyLink  # noqa: E402
from tests.support.waits import wait_for  # noqa: E402

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:modbus_tk.*"),
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
]

REGISTERS = [42, 7, 1000, 3]
COILS = [True, False, True]


class ForeignSlave:
    """modbus_tk RTU slave (unit 1) with holding registers and coils; `answer` overrides the reply PDU."""

    def __init__(self, port: str) -> None:
        self.answer: bytes | None = None  # reply PDU (function code + data) sent instead of the real one
        self.requests = 0
        self._lock = threading.Lock()
        self._ser = serial.Serial(port, baudrate=19200)
        self.server = modbus_rtu.RtuServer(self._ser)
        slave = self.server.add_slave(1)
        slave.add_block("regs", mb.HOLDING_REGISTERS, 0, len(REGISTERS))
        slave.set_values("regs", 0, REGISTERS)
        slave.add_block("coils", mb.COILS, 0, len(COILS))
        slave.set_values("coils", 0, [int(c) for c in COILS])

    def _hook(self, args: tuple) -> bytes | None:
        with self._lock:
            self.requests += 1
            return self.answer

    def __enter__(self) -> "ForeignSlave":
        hooks.install_hook("modbus.Slave.handle_request", self._hook)
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        hooks.uninstall_hook("modbus.Slave.handle_request", self._hook)
        self._ser.close()


@pytest.fixture
async def link(tmp_path) -> Iterator[PtyLink]:
    lk = PtyLink(tmp_path / "ttyForeign")
    await lk.start()
    yield lk
    await lk.stop()


REG_MAP = RegisterMap(
    "foreign_regs", [Point("a", "holding", 0), Point("b", "holding", 1), Point("c", "holding", 2, type="u32")]
)
COIL_MAP = RegisterMap(
    "foreign_coils", [Point("x", "coil", 0, type="bool"), Point("y", "coil", 2, type="bool")]
)


@pytest.mark.parametrize(
    ("regmap", "bad_pdu"),
    [
        (REG_MAP, bytes.fromhex("0600000001")),  # FC3 read answered with a write-single-register echo
        (REG_MAP, bytes.fromhex("0101ff")),  # FC3 read answered with a coil read
        (REG_MAP, bytes.fromhex("03020001")),  # FC3 read of 4 registers answered with only one
        (COIL_MAP, bytes.fromhex("0302002a")),  # FC1 coil read answered with a register read
    ],
    ids=["fc6-for-fc3", "fc1-for-fc3", "short-fc3", "fc3-for-fc1"],
)
async def test_wrong_but_well_formed_replies_fail_the_poll_not_the_bus(link, regmap, bad_pdu):
    with ForeignSlave(link.sim_path) as slave:
        hub = ModbusHub("foreign", serial_port=link.path, timeout_s=0.2, retries=0)
        dev = hub.add_device("dev", 1, regmap, poll_interval_s=0.05, offline_after=3, max_backoff_s=0.3)
        await hub.start()
        try:
            await wait_for(lambda: dev.online)
            good = dict(dev.values)
            assert good == (
                {"a": 42, "b": 7, "c": 1000 * 65536 + 3} if regmap is REG_MAP else {"x": True, "y": True}
            )
            slave.answer = bad_pdu
            await wait_for(lambda: not dev.online)
            # the poll task survived, the device is offline with a typed error, the bad reply was counted
            assert hub.task_name == "modbus.poll.foreign"
            assert dev.last_error is not None and dev.last_error.startswith("ProtocolError")
            assert dev.counters["errors"] >= 3 and hub.counters["bad_replies"] >= 3
            assert dev.values == good  # nothing from the wrong reply was taken as a value
            slave.answer = None
            await wait_for(lambda: dev.online)  # still polling: it comes back on its own
            assert hub.task_name == "modbus.poll.foreign"
        finally:
            await hub.stop()


async def test_wrong_reply_to_a_write_read_back_is_a_protocol_error(link):
    """A write whose read-back answer has the wrong function code raises, it is not a value."""
    from drivers.errors import ProtocolError

    regmap = RegisterMap("w", [Point("sp", "holding", 0, writable=True)])
    with ForeignSlave(link.sim_path) as slave:
        hub = ModbusHub("foreign", serial_port=link.path, timeout_s=0.2, retries=0)
        dev = hub.add_device("dev", 1, regmap, poll_interval_s=5.0)
        await hub.start()
        try:
            await wait_for(lambda: dev.online)
            slave.answer = bytes.fromhex("0101ff")  # every request, the write included, gets a coil reply
            with pytest.raises(ProtocolError, match="function code"):
                await dev.write("sp", 5)
        finally:
            await hub.stop()

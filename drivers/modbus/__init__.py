"""Modbus RTU/TCP driver: register maps as data, one hub per bus, typed errors.

hub = ModbusHub("bus0", serial_port="/dev/ttyUSB0")
fridge = hub.add_device("fridge", 1, RegisterMap.builtin("fridge_controller"), poll_interval_s=2)
await hub.start()
await fridge.write("setpoint_c", 4.0)
"""

from .device import ModbusDevice
from .hub import ModbusHub
from .regmap import Block, MapError, Point, RegisterMap, decode_block, decode_point, encode_point, plan_blocks

__all__ = [
    "Block",
    "MapError",
    "ModbusDevice",
    "ModbusHub",
    "Point",
    "RegisterMap",
    "decode_block",
    "decode_point",
    "encode_point",
    "plan_blocks",
]

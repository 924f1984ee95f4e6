"""Simulated Modbus devices (fridge controller, weight shelves, door I/O) on real pymodbus servers."""

from .link import PtyLink
from .plant import SimClock, SimModbusPlant, wire_time_s
from .slaves import FridgeControllerSlave, IoModuleSlave, RegisterImage, WeightShelfSlave

__all__ = ["FridgeControllerSlave", "IoModuleSlave", "PtyLink", "RegisterImage", "SimClock", "SimModbusPlant",
           "WeightShelfSlave", "wire_time_s"]

"""The typed errors every driver raises.

`drivers` may not import `edge`, so the device branch of the house exception tree is rooted here;
`edge.core.errors.EdgeError` is the root for the rest, and `edge` catches `DeviceError` by name.
"""


class DeviceError(Exception):
    """A device did not do what was asked. Subclasses say why."""


class DeviceTimeout(DeviceError):
    """No (complete) answer before the deadline."""


class DeviceDisconnected(DeviceError):
    """The link (serial port, TCP socket, bus adapter) is gone."""


class DeviceFault(DeviceError):
    """The device answered, and the answer is a fault (jam, exception response, sensor error)."""


class ProtocolError(DeviceError):
    """Bytes that do not form a valid frame (bad CRC, bad length, unknown command)."""

"""Register maps as data: TOML files that say where each value lives and how to read it.

A map is a list of points. Each point names a table (holding/input/coil/discrete), an address, a
type (u16/i16/u32/i32/f32/bool), a scale (value = raw * scale), a unit, a word order for 32-bit
types, whether it may be written, and an optional plausible range. Loading validates everything
and raises `MapError` naming the file, the point and the problem.

Encoding/decoding is pure (no I/O), so the simulator uses the same code to fill its registers.
"""

from __future__ import annotations

import math
import pathlib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pymodbus.client.mixin import ModbusClientMixin

from ..errors import ProtocolError

MAPS_DIR = pathlib.Path(__file__).parent / "maps"

Table = Literal["holding", "input", "coil", "discrete"]
Value = float | int | bool

TABLES: tuple[str, ...] = ("holding", "input", "coil", "discrete")
BIT_TABLES = frozenset({"coil", "discrete"})
WRITABLE_TABLES = frozenset({"holding", "coil"})
MAX_REGS_PER_READ = 125  # Modbus limit for FC3/FC4
MAX_BITS_PER_READ = 2000  # Modbus limit for FC1/FC2

_DT = ModbusClientMixin.DATATYPE
# type name -> (pymodbus datatype, registers used, raw min, raw max)
TYPES: dict[str, tuple[Any, int, float, float]] = {
    "u16": (_DT.UINT16, 1, 0, 0xFFFF),
    "i16": (_DT.INT16, 1, -0x8000, 0x7FFF),
    "u32": (_DT.UINT32, 2, 0, 0xFFFFFFFF),
    "i32": (_DT.INT32, 2, -0x80000000, 0x7FFFFFFF),
    "f32": (_DT.FLOAT32, 2, -math.inf, math.inf),
    "bool": (None, 1, 0, 1),
}
_POINT_KEYS = {
    "name",
    "table",
    "address",
    "type",
    "scale",
    "unit",
    "word_order",
    "writable",
    "range",
    "description",
}


class MapError(ValueError):
    """A register map file is invalid; the message names the file, the point and the problem."""

    def __init__(self, source: str, point: str | None, problem: str) -> None:
        self.source, self.point, self.problem = source, point, problem
        where = f"{source}: point {point!r}" if point else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Point:
    """One value on a device: where it lives and how its raw registers become a number."""

    name: str
    table: str
    address: int
    type: str = "u16"
    scale: float = 1.0
    unit: str = ""
    word_order: str = "big"
    writable: bool = False
    range: tuple[float, float] | None = None
    description: str = ""

    @property
    def width(self) -> int:
        """Registers (or bits) this point occupies."""
        return TYPES[self.type][1]

    @property
    def is_bit(self) -> bool:
        return self.table in BIT_TABLES

    def in_range(self, value: Value) -> bool:
        """False when the value is outside the point's plausible range (a sensor fault)."""
        return self.range is None or self.range[0] <= float(value) <= self.range[1]


@dataclass(frozen=True)
class Block:
    """A contiguous run of one table read with a single request."""

    table: str
    start: int
    count: int
    points: tuple[Point, ...] = field(default_factory=tuple)


def encode_point(point: Point, value: Value) -> list[int] | bool:
    """Engineering value -> raw registers (or one bool for coil/discrete). Pure.

    Raises ValueError when the value does not fit the point's type.
    """
    if point.is_bit:
        return bool(value)
    datatype, _, lo, hi = TYPES[point.type]
    if point.type == "f32":
        raw: float | int = float(value) / point.scale
    else:
        raw = round(float(value) / point.scale)
        if not lo <= raw <= hi:
            raise ValueError(f"{point.name}: {value} {point.unit} does not fit {point.type} (raw {raw})")
    regs: list[int] = ModbusClientMixin.convert_to_registers(raw, datatype, word_order=point.word_order)  # type: ignore[arg-type]
    return regs


def decode_point(point: Point, raw: Sequence[int] | bool) -> Value:
    """Raw registers (or a bool) -> engineering value. Pure; ints stay ints when scale is 1."""
    if point.is_bit:
        return bool(raw)
    assert not isinstance(raw, bool)
    datatype = TYPES[point.type][0]
    number = ModbusClientMixin.convert_from_registers(list(raw), datatype, word_order=point.word_order)  # type: ignore[arg-type]
    assert isinstance(number, int | float)
    if point.type == "f32":
        return float(number) * point.scale
    if point.scale == 1.0:
        return int(number)
    # round away float noise from the scale (0.1 * 43 = 4.300000000000001)
    return round(number * point.scale, 10)


def decode_block(block: Block, raw: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
    """All points of a block from the raw values read at block.start. Pure.

    Raises ProtocolError when `raw` holds fewer values than the block spans (a short reply).
    """
    if len(raw) < block.count:
        raise ProtocolError(
            f"{block.table} block at {block.start}: {len(raw)} values, expected {block.count}"
        )
    out: dict[str, Value] = {}
    for p in block.points:
        off = p.address - block.start
        out[p.name] = decode_point(
            p, bool(raw[off]) if p.is_bit else [int(x) for x in raw[off : off + p.width]]
        )
    return out


class RegisterMap:
    """A validated set of points for one device model, plus the read plan (blocks)."""

    def __init__(
        self, name: str, points: Iterable[Point], *, max_gap: int = 0, source: str = "<memory>"
    ) -> None:
        self.name = name
        self.source = source
        self.max_gap = max_gap
        self.points: dict[str, Point] = {}
        for p in points:
            _check_point(p, source)
            if p.name in self.points:
                raise MapError(source, p.name, "duplicate point name")
            self.points[p.name] = p
        _check_overlaps(self.points.values(), source)
        self.blocks: tuple[Block, ...] = tuple(plan_blocks(self.points.values(), max_gap=max_gap))

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], source: str = "<memory>") -> RegisterMap:
        """Build from a parsed TOML document ({'device': {...}, 'point': [...]})."""
        unknown = set(doc) - {"device", "point"}
        if unknown:
            raise MapError(source, None, f"unknown top-level keys {sorted(unknown)}; allowed: device, point")
        raw_device, raw_points = doc.get("device", {}), doc.get("point", [])
        if not isinstance(raw_device, Mapping):
            raise MapError(source, None, "[device] must be a table")
        if not isinstance(raw_points, list):
            raise MapError(source, None, "[[point]] must be an array of tables")
        points = [_point_from_doc(p, source, i) for i, p in enumerate(raw_points)]
        if not points:
            raise MapError(source, None, "no [[point]] entries")
        max_gap = raw_device.get("max_gap", 0)
        if not isinstance(max_gap, int) or isinstance(max_gap, bool) or not 0 <= max_gap <= 125:
            raise MapError(source, None, f"device.max_gap must be an integer 0..125, got {max_gap!r}")
        name = str(raw_device.get("name", pathlib.Path(source).stem))
        return cls(name, points, max_gap=max_gap, source=source)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> RegisterMap:
        """Load and validate a map file; raises MapError (a ValueError) on any problem."""
        path = pathlib.Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise MapError(str(path), None, f"not valid TOML: {exc}") from exc
        except OSError as exc:
            raise MapError(str(path), None, f"cannot read: {exc.strerror}") from exc
        return cls.from_doc(doc, source=str(path))

    @classmethod
    def builtin(cls, name: str) -> RegisterMap:
        """One of the maps shipped in drivers/modbus/maps (fridge_controller, weight_shelf, io_module)."""
        path = MAPS_DIR / f"{name}.toml"
        if not path.is_file():
            have = sorted(p.stem for p in MAPS_DIR.glob("*.toml"))
            raise MapError(str(path), None, f"no builtin map {name!r}; have {have}")
        return cls.load(path)

    def point(self, name: str) -> Point:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"{self.name}: no point {name!r}") from None

    def __repr__(self) -> str:
        return f"RegisterMap({self.name!r}, points={len(self.points)}, blocks={len(self.blocks)})"


def plan_blocks(points: Iterable[Point], *, max_gap: int = 0) -> list[Block]:
    """Coalesce points into as few reads as possible: contiguous runs per table (holes <= max_gap)."""
    blocks: list[Block] = []
    for table in TABLES:
        limit = MAX_BITS_PER_READ if table in BIT_TABLES else MAX_REGS_PER_READ
        run: list[Point] = []
        for p in sorted((p for p in points if p.table == table), key=lambda p: p.address):
            if run:
                start, end = run[0].address, max(q.address + q.width for q in run)
                if p.address - end > max_gap or p.address + p.width - start > limit:
                    blocks.append(_block(table, run))
                    run = []
            run.append(p)
        if run:
            blocks.append(_block(table, run))
    return blocks


def _block(table: str, run: list[Point]) -> Block:
    start = run[0].address
    end = max(p.address + p.width for p in run)
    return Block(table, start, end - start, tuple(run))


def _point_from_doc(raw: Any, source: str, index: int) -> Point:
    if not isinstance(raw, Mapping):
        raise MapError(source, f"#{index}", "each [[point]] must be a table")
    name = str(raw.get("name", f"#{index}"))
    unknown = set(raw) - _POINT_KEYS
    if unknown:
        raise MapError(source, name, f"unknown keys {sorted(unknown)}; allowed: {sorted(_POINT_KEYS)}")
    for key in ("name", "table", "address"):
        if key not in raw:
            raise MapError(source, name, f"missing required key {key!r}")
    table = str(raw["table"])
    rng = raw.get("range")
    if rng is not None:
        if not (
            isinstance(rng, list)
            and len(rng) == 2
            and all(isinstance(x, int | float) for x in rng)
            and rng[0] < rng[1]
        ):
            raise MapError(source, name, f"range must be [min, max] with min < max, got {rng!r}")
        rng = (float(rng[0]), float(rng[1]))
    if not isinstance(raw["address"], int) or isinstance(raw["address"], bool):
        raise MapError(source, name, f"address must be an integer, got {raw['address']!r}")
    scale = raw.get("scale", 1.0)
    if not isinstance(scale, int | float) or isinstance(scale, bool) or scale == 0 or scale != scale:
        raise MapError(source, name, f"scale must be a non-zero number, got {scale!r}")
    return Point(
        name=name,
        table=table,
        address=raw["address"],
        type=str(raw.get("type", "bool" if table in BIT_TABLES else "u16")),
        scale=float(scale),
        unit=str(raw.get("unit", "")),
        word_order=str(raw.get("word_order", "big")),
        writable=bool(raw.get("writable", False)),
        range=rng,
        description=str(raw.get("description", "")),
    )


def _check_point(p: Point, source: str) -> None:
    if p.table not in TABLES:
        raise MapError(source, p.name, f"unknown table {p.table!r}; allowed: {list(TABLES)}")
    if p.type not in TYPES:
        raise MapError(source, p.name, f"unknown type {p.type!r}; allowed: {list(TYPES)}")
    if (p.type == "bool") != p.is_bit:
        raise MapError(
            source,
            p.name,
            f"type {p.type!r} does not fit table {p.table!r} "
            "(coil/discrete hold bool; registers hold numbers)",
        )
    if p.writable and p.table not in WRITABLE_TABLES:
        raise MapError(source, p.name, f"writable=true on read-only table {p.table!r}")
    if not 0 <= p.address <= 0xFFFF - (p.width - 1):
        raise MapError(source, p.name, f"address {p.address} outside 0..65535")
    if p.word_order not in ("big", "little"):
        raise MapError(source, p.name, f"word_order {p.word_order!r}; allowed: big, little")
    if p.scale == 0 or not math.isfinite(p.scale):
        raise MapError(source, p.name, f"scale must be a finite non-zero number, got {p.scale}")


def _check_overlaps(points: Iterable[Point], source: str) -> None:
    owner: dict[tuple[str, int], str] = {}
    for p in points:
        for addr in range(p.address, p.address + p.width):
            other = owner.setdefault((p.table, addr), p.name)
            if other != p.name:
                raise MapError(source, p.name, f"{p.table} address {addr} overlaps point {other!r}")

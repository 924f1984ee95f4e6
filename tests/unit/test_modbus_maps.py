"""Register maps: validation of bad files, the read plan, and codec golden values."""

import pathlib

import pytest

from drivers.modbus import MapError, Point, RegisterMap, decode_block, decode_point, encode_point

pytestmark = pytest.mark.timeout(10)


def write_map(tmp_path: pathlib.Path, points: str, name: str = "bad.toml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text('[device]\nname = "x"\n' + points)
    return path


@pytest.mark.parametrize("name", ["fridge_controller", "weight_shelf", "io_module"])
def test_builtin_maps_load_and_read_in_one_request_per_table(name):
    m = RegisterMap.builtin(name)
    tables = [b.table for b in m.blocks]
    assert len(tables) == len(set(tables)), "each table should be read with a single request"
    covered = {p.name for b in m.blocks for p in b.points}
    assert covered == set(m.points)


def test_weight_shelf_has_four_shelves_with_grams_stable_tare_and_calibration():
    m = RegisterMap.builtin("weight_shelf")
    for k in range(4):
        assert m.point(f"shelf{k}_grams").type == "i32" and m.point(f"shelf{k}_grams").scale == 0.1
        assert m.point(f"shelf{k}_stable").table == "discrete"
        assert m.point(f"tare_shelf{k}").writable and m.point(f"calibration_factor{k}").writable


@pytest.mark.parametrize(("points", "problem"), [
    ('[[point]]\nname="a"\ntable="eeprom"\naddress=0\n', "unknown table 'eeprom'"),
    ('[[point]]\nname="a"\ntable="holding"\naddress=0\ntype="u24"\n', "unknown type 'u24'"),
    ('[[point]]\nname="a"\ntable="holding"\naddress=0\n[[point]]\nname="a"\ntable="holding"\naddress=5\n',
     "duplicate point name"),
    ('[[point]]\nname="a"\ntable="holding"\naddress=0\ntype="u32"\n[[point]]\nname="b"\ntable="holding"\n'
     'address=1\n', "holding address 1 overlaps point 'a'"),
    ('[[point]]\nname="a"\ntable="input"\naddress=0\nwritable=true\n', "writable=true on read-only table 'input'"),
    ('[[point]]\nname="a"\ntable="discrete"\naddress=0\nwritable=true\n', "read-only table 'discrete'"),
    ('[[point]]\nname="a"\ntable="holding"\naddress=0\nrange=[5, 1]\n', "range must be [min, max]"),
    ('[[point]]\nname="a"\ntable="holding"\naddress=0\ncolour="red"\n', "unknown keys ['colour']"),
    ('[[point]]\nname="a"\ntable="coil"\naddress=0\ntype="u16"\n', "does not fit table 'coil'"),
    ('[[point]]\nname="a"\ntable="holding"\naddress=70000\n', "outside 0..65535"),
    ('[[point]]\nname="a"\ntable="holding"\n', "missing required key 'address'"),
])
def test_bad_map_files_are_refused_naming_file_point_and_problem(tmp_path, points, problem):
    path = write_map(tmp_path, points)
    with pytest.raises(MapError) as err:
        RegisterMap.load(path)
    msg = str(err.value)
    assert str(path) in msg and "'a'" in msg and problem in msg
    assert isinstance(err.value, ValueError)


def test_unreadable_and_non_toml_files_are_map_errors(tmp_path):
    with pytest.raises(MapError, match="cannot read"):
        RegisterMap.load(tmp_path / "missing.toml")
    bad = tmp_path / "broken.toml"
    bad.write_text("[[point]\nname=")
    with pytest.raises(MapError, match="not valid TOML"):
        RegisterMap.load(bad)
    with pytest.raises(MapError, match="no builtin map 'toaster'"):
        RegisterMap.builtin("toaster")


def test_points_coalesce_into_contiguous_blocks_split_at_holes(tmp_path):
    path = write_map(tmp_path, "".join(
        f'[[point]]\nname="r{a}"\ntable="input"\naddress={a}\ntype="{t}"\n'
        for a, t in [(0, "u16"), (1, "u32"), (3, "i16"), (10, "u16")]))
    m = RegisterMap.load(path)
    assert [(b.table, b.start, b.count) for b in m.blocks] == [("input", 0, 4), ("input", 10, 1)]


# golden register values: what a real device puts on the wire for these engineering values
GOLDEN = [
    (Point("t", "input", 0, "i16", 0.1), -12.5, [0xFF83]),
    (Point("t", "input", 0, "i16", 0.1), 4.3, [43]),
    (Point("n", "input", 0, "u16"), 65535, [0xFFFF]),
    (Point("g", "input", 0, "i32", 0.1), 1234.5, [0x0000, 0x3039]),
    (Point("g", "input", 0, "i32", 0.1), -1.5, [0xFFFF, 0xFFF1]),
    (Point("g", "input", 0, "i32", 0.1, word_order="little"), 1234.5, [0x3039, 0x0000]),
    (Point("c", "holding", 0, "u32"), 0x12345678, [0x1234, 0x5678]),
    (Point("f", "holding", 0, "f32"), 1.0, [0x3F80, 0x0000]),
    (Point("f", "holding", 0, "f32", word_order="little"), -2.5, [0x0000, 0xC020]),
]


@pytest.mark.parametrize(("point", "value", "regs"), GOLDEN)
def test_codec_golden_values(point, value, regs):
    assert encode_point(point, value) == regs
    assert decode_point(point, regs) == pytest.approx(value)


def test_codec_refuses_values_that_do_not_fit_and_handles_bits():
    with pytest.raises(ValueError, match="does not fit i16"):
        encode_point(Point("t", "holding", 0, "i16", 0.1), 4000.0)
    with pytest.raises(ValueError):
        encode_point(Point("n", "holding", 0, "u16"), -1)
    coil = Point("lock", "coil", 0, "bool")
    assert encode_point(coil, 1) is True and decode_point(coil, False) is False


def test_decode_block_maps_raw_registers_to_named_values():
    m = RegisterMap.builtin("fridge_controller")
    block = next(b for b in m.blocks if b.table == "input")
    values = decode_block(block, [41, 0xFFB5, 0b101])
    assert values == {"cabinet_temp_c": 4.1, "evaporator_temp_c": -7.5, "alarm_bits": 5}
    assert not m.point("cabinet_temp_c").in_range(-3276.8)

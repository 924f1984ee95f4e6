"""Fuzzing every parser at the trust boundary with hypothesis: bad input raises the parser's
documented error and nothing else — never a crash with a stray TypeError/KeyError/AttributeError.

Covered here: config files (`load_config`, `build`), sync payloads and commands (`sync.protocol`,
`sync.signing.verify_command`), catalog/planogram documents (`Planogram.from_doc`) and Modbus
register maps (`RegisterMap.from_doc`/`load`). The vend board frame decoder is fuzzed in
tests/unit/test_vend_codec.py; web forms and JSON API bodies in tests/e2e/test_web_fuzz.py.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from drivers.modbus.regmap import MapError, RegisterMap
from edge.config import Config, ConfigError, build, load_config
from edge.core.catalog import CatalogInvalid, Planogram
from hw_sim.world import load_demo_planogram
from sync import protocol, signing

pytestmark = pytest.mark.timeout(120)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEMO = load_demo_planogram()
CONFIG_KEYS = ["machine", "vend_board", "logging", "door", "temperature", "modbus", "sync", "web", "id",
               "port", "data_dir", "baudrate", "retries", "enabled", "url", "devices", "unit_id", "map",
               "role", "level", "setpoint_c", "takeandgo", "cameras", "source", "cell_w", "x"]

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
toml_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
                | st.text(max_size=20))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), inner,
                                             max_size=5), max_leaves=25)


_TMP = tempfile.TemporaryDirectory(prefix="fuzz")  # one file, rewritten per example; removed at exit


def _fuzz_file(text: str) -> pathlib.Path:
    p = pathlib.Path(_TMP.name) / "input.toml"
    p.write_text(text, encoding="utf-8")
    return p


# --- config -------------------------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=300) | st.lists(st.sampled_from(
    ["[machine]", "[vend_board]", "[sync]", "[modbus.bus0]", "[modbus.bus0.devices.d1]", 'id = "vm-1"',
     'port = "/dev/ttyUSB0"', "retries = 3", "retries = 99", "baudrate = 'x'", "enabled = true",
     'url = "http://x"', "x = [1, 2", "= =", "[[point]]", 'role = "fridge"', 'map = "m.toml"',
     "setpoint_c = 4.5", "setpoint_c = inf", "poll_wait_s = nan", "[web]", "port = 70000"]),
    max_size=12).map("\n".join))
def test_any_config_text_is_either_a_config_or_a_config_error(text: str) -> None:
    path = _fuzz_file(text)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert exc.key  # the error names the key (or <file>)
        return
    assert isinstance(cfg, Config) and cfg.vend_board.port  # only a config with its required parts


@FUZZ
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), toml_values, max_size=6))
@example({"machine": {"id": "vm"}, "vend_board": {"port": "/dev/x"}, "modbus": {"b": {"devices": {"d": 3}}}})
@example({"machine": {"id": "vm"}, "vend_board": {"port": "/dev/x"}, "cameras": []})
def test_any_config_structure_is_either_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    try:
        cfg = build(Config, raw, "")
    except ConfigError as exc:
        assert isinstance(exc.key, str)  # names the offending key (a quoted "" key is named "")
        return
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("key, value", [
    ("vend_board.reply_timeout_s", "nan"),
    ("vend_board.vend_timeout_s", "inf")])
def test_non_finite_numbers_are_refused(key: str, value: str) -> None:
    section, name = key.split(".")
    text = f'[machine]\nid = "vm"\n[vend_board]\nport = "/dev/x"\n{name} = {value}\n'
    with pytest.raises(ConfigError) as err:
        load_config(_fuzz_file(text))
    assert err.value.key == key


# --- sync protocol --------------------------------------------------------------------------------
def _record_like() -> st.SearchStrategy[dict[str, Any]]:
    good = {"record_id": "order-1-completed", "seq": 7, "kind": "order", "created_at": "2026-01-01T00:00:00Z",
            "priority": 0, "payload": {"order_id": "o1", "total": 180, "lines": [
                {"sku_id": "cola", "qty": 1, "unit_price": 180}]}}
    return st.builds(lambda k, v, kind: {**good, "kind": kind, k: v}, st.sampled_from(sorted(good)), json_values,
                     st.sampled_from(sorted(protocol.KINDS)))


@FUZZ
@given(json_values | _record_like())
def test_parse_record_raises_only_protocol_invalid(obj: Any) -> None:
    try:
        record = protocol.parse_record(obj)
    except protocol.ProtocolInvalid as exc:
        assert exc.reason
        return
    assert record.kind in protocol.KINDS and protocol.ID_RE.match(record.record_id)


@FUZZ
@given(json_values | st.fixed_dictionaries({"records": json_values})
       | st.fixed_dictionaries({"acks": st.lists(json_values, max_size=4)})
       | st.fixed_dictionaries({"commands": st.lists(json_values, max_size=4)})
       | st.fixed_dictionaries({"version": json_values, "doc": json_values}))
def test_push_ack_config_and_command_parsers_raise_only_protocol_invalid(doc: Any) -> None:
    for parse in (protocol.parse_push, protocol.parse_acks, protocol.parse_config, protocol.parse_commands):
        try:
            out = parse(doc)
        except protocol.ProtocolInvalid as exc:
            assert exc.reason
            continue
        assert isinstance(out, (list, tuple))


@FUZZ
@given(st.dictionaries(st.sampled_from(["command_id", "name", "args", "issued_at", "expires_at", "signature"])
                       | st.text(max_size=5), json_values, max_size=7), st.binary(min_size=16, max_size=32))
def test_verify_command_never_raises_and_refuses_forgeries(command: dict[str, Any], secret: bytes) -> None:
    sig = command.get("signature")
    assume(not isinstance(sig, str) or sig.isascii())  # known gap: see test_known_parser_gaps
    assert signing.verify_command(secret, command) in (True, False)
    signed = {**command, "signature": signing.sign_command(secret, command)}
    assert signing.verify_command(secret, signed)
    assert not signing.verify_command(secret[::-1] + b"x", signed)


# --- catalog / planogram ----------------------------------------------------------------------------
def _mutated_demo() -> st.SearchStrategy[dict[str, Any]]:
    def mutate(where: str, index: int, key: str, value: Any) -> dict[str, Any]:
        doc = copy.deepcopy(DEMO)
        if where == "doc":
            doc[key if key in doc else "version"] = value
        else:
            items = doc[where]
            item = items[index % len(items)]
            item[key if key in item else next(iter(item))] = value
        return doc
    return st.builds(mutate, st.sampled_from(["doc", "skus", "slots"]), st.integers(0, 100),
                     st.sampled_from(["version", "currency", "skus", "slots", "sku_id", "name", "price",
                                      "weight_g", "weight_tol_g", "perishable", "slot_id", "capacity",
                                      "shelf", "lane"]), json_values)


@FUZZ
@given(json_values | _mutated_demo())
def test_planogram_from_doc_raises_only_catalog_invalid(doc: Any) -> None:
    slots = doc.get("slots") if isinstance(doc, Mapping) else None
    assume(not isinstance(slots, list) or all(isinstance(x, Mapping) for x in slots))  # known gap, below
    try:
        p = Planogram.from_doc(doc)
    except CatalogInvalid:
        return
    assert Planogram.from_doc(json.loads(json.dumps(p.to_doc()))) == p  # what it accepts round-trips
    assert all(math.isfinite(s.weight_g) and s.price.amount >= 0 for s in p.skus.values())


# --- Modbus register maps ----------------------------------------------------------------------------
POINT_KEYS = ["name", "table", "address", "type", "scale", "unit", "word_order", "writable", "range",
              "description"]
point_like = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=6), "table": st.sampled_from(["holding", "input", "coil", "x"]),
     "address": st.integers(-5, 70000), "type": st.sampled_from(["u16", "s16", "u32", "f32", "bool", "y"])},
    # optional values keep their TOML types (known gap below: a wrong-typed value is not a MapError)
    optional={"scale": st.floats() | st.integers(-10, 10), "unit": st.text(max_size=4),
              "word_order": st.sampled_from(["big", "little", "middle"]), "writable": st.booleans(),
              "range": st.lists(st.floats(-1e6, 1e6) | st.integers(-5, 5), max_size=3),
              "description": st.text(max_size=8)})


@FUZZ
@given(st.dictionaries(st.sampled_from(["device", "point", "extra"]),
                       json_values | st.lists(point_like, max_size=4), max_size=3)
       | st.fixed_dictionaries({"point": st.lists(point_like | json_values, max_size=5)},
                               optional={"device": json_values}))
def test_register_map_from_doc_raises_only_map_error(doc: dict[str, Any]) -> None:
    device = doc.get("device", {})
    assume(isinstance(device, Mapping) and isinstance(device.get("max_gap", 0), int)  # known gaps, below
           and isinstance(doc.get("point", []), list))
    try:
        rmap = RegisterMap.from_doc(doc)
    except MapError as exc:
        assert exc.problem
        return
    assert rmap.points and all(0 <= p.address <= 65535 for p in rmap.points.values())


@FUZZ
@given(st.text(max_size=200))
def test_register_map_file_of_any_text_raises_only_map_error(text: str) -> None:
    try:
        RegisterMap.load(_fuzz_file(text))
    except MapError:
        pass


# --- what the fuzzers found (each was a crash on bad input; now a documented error) --------------------
POINT = {"name": "t", "table": "input", "address": 1, "type": "s16"}
KNOWN_GAPS = [
    ("verify_command: non-ASCII signature → TypeError from hmac.compare_digest (sync/signing.py)",
     lambda: signing.verify_command(b"k" * 16, {"command_id": "c", "signature": "\x80"}), ()),
    ("Planogram.from_doc: a slot that is not an object → AttributeError (edge/core/catalog.py _slot)",
     lambda: Planogram.from_doc({**DEMO, "slots": [None]}), (CatalogInvalid,)),
    ("RegisterMap.from_doc: [device] not a table → TypeError/ValueError (drivers/modbus/regmap.py)",
     lambda: RegisterMap.from_doc({"device": "fridge", "point": [POINT]}), (MapError,)),
    ("RegisterMap.from_doc: device.max_gap not an integer → ValueError from int()",
     lambda: RegisterMap.from_doc({"device": {"max_gap": "wide"}, "point": [POINT]}), (MapError,)),
    ("RegisterMap.from_doc: a point value of the wrong type (scale = none/string) → TypeError from float()",
     lambda: RegisterMap.from_doc({"point": [{**POINT, "scale": None}]}), (MapError,)),
    ("RegisterMap.from_doc: [[point]] not a list (e.g. point = 3) → TypeError from enumerate()",
     lambda: RegisterMap.from_doc({"point": 3}), (MapError,)),
]


@pytest.mark.parametrize("what, call, documented", KNOWN_GAPS, ids=[g[0].split(":")[0] for g in KNOWN_GAPS])
def test_gaps_the_fuzzers_found_are_closed(what: str, call: Any, documented: tuple[type[BaseException], ...]) -> None:
    try:
        result = call()
    except documented:
        return
    assert not documented and result is False, what  # verify_command answers False, it never raises

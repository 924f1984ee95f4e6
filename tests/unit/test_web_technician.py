"""What the technician reads: local time in the configured zone, human durations, the chart's time axis and
limit lines, decoded serial frames, best-before states, the web config keys (timezone, allowed_hosts)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import zoneinfo

import pytest

from drivers.vend_board import codec
from edge.config import WebConfig, build
from edge.core.errors import ConfigError
from edge.core.food_safety import expiry
from edge.services import diagnostics
from edge.services.queries import _day_bounds
from edge.web import fmt
from edge.web.auth import host_allowed
from edge.web.chart import temperature_chart

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")  # UTC+05:30, no DST: an offset no one gets by accident


def test_local_time_is_the_configured_zone_not_utc():
    assert fmt.local_time("2026-12-02T11:22:21.123Z", KOLKATA) == "2026-12-02 16:52:21"
    assert fmt.local_time("2026-07-01T23:30:00Z", BERLIN) == "2026-07-02 01:30:00"  # summer time, next day
    assert (
        fmt.local_time(1_800_000_000.25, zoneinfo.ZoneInfo("UTC"), millis=True) == "2027-01-15 08:00:00.250"
    )
    assert fmt.local_time(None, BERLIN) == "–" and fmt.local_time("not a time", BERLIN) == "not a time"


def test_durations_read_like_a_person_writes_them():
    assert [fmt.human_duration(s) for s in (0, 45, 720, 11_520, 190_800)] == [
        "0 s",
        "45 s",
        "12 min",
        "3 h 12 min",
        "2 d 5 h",
    ]
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC).timestamp()
    assert fmt.ago("2026-12-02T11:57:00Z", now) == "3 min ago"
    assert fmt.when("2026-12-02T11:57:00Z", BERLIN, now) == "2026-12-02 12:57:00 (3 min ago)"
    assert fmt.seen(None) == "–" and fmt.seen(4.2) == "4 s ago"
    assert fmt.zone_label(BERLIN, now) == "Europe/Berlin (CET, UTC+01:00)"
    assert fmt.zone_label(zoneinfo.ZoneInfo("UTC"), now) == "UTC"


def test_sales_days_are_local_days():
    # Berlin's 2 December starts at 23:00 UTC on the 1st; Kolkata's at 18:30 UTC on the 1st
    assert _day_bounds("2026-12-02", "2026-12-02", BERLIN) == ("2026-12-01T23:00:00", "2026-12-02T23:00:00")
    assert _day_bounds("2026-12-02", "2026-12-02", KOLKATA)[0] == "2026-12-01T18:30:00"
    assert _day_bounds("0001-01-01", "9999-12-31", BERLIN) == ("0000", "9999-12-31T99")  # no overflow


def test_web_config_timezone_and_allowed_hosts_are_validated():
    cfg = build(WebConfig, {"timezone": "Europe/Berlin", "allowed_hosts": ["Vm-7.example.com"]}, "web")
    assert cfg.timezone == "Europe/Berlin" and cfg.allowed_hosts == ("Vm-7.example.com",)
    assert build(WebConfig, {}, "web").timezone == "UTC"
    for bad, key in [
        ({"timezone": "Mars/Olympus"}, "web.timezone"),
        ({"timezone": "../../etc/passwd"}, "web.timezone"),
        ({"allowed_hosts": "x.example"}, "web.allowed_hosts"),
        ({"allowed_hosts": ["a b"]}, "web.allowed_hosts[0]"),
        ({"allowed_hosts": [7]}, "web.allowed_hosts[0]"),
    ]:
        with pytest.raises(ConfigError) as err:
            build(WebConfig, bad, "web")
        assert err.value.key == key


def test_allowed_hosts_extend_the_host_check():
    assert not host_allowed("vm-7.example.com:8080")
    assert host_allowed("VM-7.example.com:8080", frozenset({"vm-7.example.com"}))
    assert not host_allowed("evil.example:8080", frozenset({"vm-7.example.com"}))


def _series(t0: float, hours: float, step_s: float = 300.0) -> list[list[float | bool]]:
    n = int(hours * 3600 / step_s)
    return [[t0 + i * step_s, 4.0 + (i % 5) * 0.2, -2.0, bool(i % 2)] for i in range(n + 1)]


def test_chart_has_a_local_time_axis_and_the_setpoint_and_alarm_lines():
    t0 = dt.datetime(2026, 12, 2, 0, 7, tzinfo=dt.UTC).timestamp()
    t = {
        "points": _series(t0, 24),
        "setpoint_c": 4.0,
        "high_alarm_c": 8.0,
        "low_alarm_c": -1.0,
        "food_safety_limit_c": 5.0,
    }
    c = temperature_chart(t, BERLIN)
    labels = [x["label"] for x in c["xticks"]]
    assert labels and all(len(lb) == 5 and lb.endswith(":00") for lb in labels)
    # 24 h of data: ticks every 3 h or more, on round Berlin hours after the first sample
    first = dt.datetime.fromtimestamp(t0, BERLIN)
    assert int(labels[0][:2]) % 3 == 0 and int(labels[0][:2]) > first.hour
    xs = [x["x"] for x in c["xticks"]]
    assert xs == sorted(xs) and c["frame"]["x0"] <= xs[0] and xs[-1] <= c["frame"]["x1"]
    lines = {ln["key"]: ln["y"] for ln in c["limits"]}
    assert set(lines) == {"setpoint_c", "high_alarm_c", "low_alarm_c", "food_safety_limit_c"}
    assert (
        lines["high_alarm_c"] < lines["food_safety_limit_c"] < lines["setpoint_c"] < lines["low_alarm_c"]
    )  # SVG y grows down
    assert c["lo"] <= -2.0 and c["hi"] >= 8.0  # every line and both curves are inside the plot
    assert c["frame"]["y0"] <= lines["high_alarm_c"] and lines["low_alarm_c"] <= c["frame"]["y1"]
    assert {"high alarm 8 °C", "setpoint 4 °C"} <= {ln["label"] for ln in c["limits"]}
    assert temperature_chart({"points": []}, BERLIN)["cabinet"] == ""


def test_chart_ticks_across_a_dst_change_stay_on_round_local_times():
    t0 = dt.datetime(2026, 10, 24, 22, 0, tzinfo=dt.UTC).timestamp()  # Berlin leaves summer time on the 25th
    labels = [x["label"] for x in temperature_chart({"points": _series(t0, 24)}, BERLIN)["xticks"]]
    assert all(lb.endswith(":00") for lb in labels) and len(labels) >= 4


def test_serial_frames_are_decoded_with_the_codec():
    done = codec.encode(codec.VendDone(seq=7, slot="A3", outcome=codec.ErrorCode.JAM, motor_ms=820))
    f = diagnostics.decode_frame(done.hex())
    assert f["msg"] == "VendDone" and f["seq"] == 7
    assert "slot=A3" in f["detail"] and "outcome=JAM" in f["detail"] and "motor_ms=820" in f["detail"]
    req = diagnostics.decode_frame(codec.encode(codec.VendReq(seq=8, slot="B12")).hex())
    assert req["msg"] == "VendReq" and req["seq"] == 8 and "slot=B12" in req["detail"]
    bad_crc = bytearray(done)
    bad_crc[-1] ^= 0xFF
    assert diagnostics.decode_frame(bad_crc.hex())["msg"] == "undecodable"
    assert diagnostics.decode_frame("00ff00")["msg"] == "noise"
    assert diagnostics.decode_frame("zz")["msg"] == "undecodable"


def test_network_state_matches_iproute2():
    """An independent reader of the same kernel state: `ip -j -4 addr`."""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("iproute2 not installed")
    want = {
        i["ifname"]: next((a["local"] for a in i.get("addr_info", []) if a.get("family") == "inet"), None)
        for i in json.loads(out)
        if i["ifname"] != "lo"
    }
    got = {i["name"]: i["ipv4"] for i in diagnostics.network_state()}
    assert {k: v for k, v in got.items() if k in want} == want
    assert all(
        i["link"] in ("up", "down", "unknown", "dormant", "lowerlayerdown", "notpresent", "testing")
        for i in diagnostics.network_state()
    )


def test_payment_state_is_unknown_without_a_device():
    assert diagnostics.payment_state(None)["state"] == "unknown"


def test_best_before_states():
    today = dt.date(2026, 12, 2)
    assert expiry("2026-12-01", today, 3) == "expired"
    assert expiry("2026-12-02", today, 3) == "near" and expiry("2026-12-03", today, 3) == "near"
    assert expiry("2026-12-04", today, 3) == "ok"
    assert expiry("2026-12-01", today, 0) is None and expiry(None, today, 3) is None

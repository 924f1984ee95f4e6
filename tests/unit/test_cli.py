"""`vendedge` as a user types it: help, --version, and config errors that name the file (exit 2, no traceback)."""

from __future__ import annotations

import os

import pytest

from edge import __version__
from edge.cli import main
from tests.support.logging_state import restore_logging  # noqa: F401  (autouse fixture)

CFG = '[machine]\nid = "m1"\ndata_dir = "{data}"\n{secrets}\n[vend_board]\nport = "/dev/null"\n{extra}'
SYNC = '[sync]\nenabled = true\nurl = "{url}"\n'


def write_cfg(tmp_path, *, secrets: str = "", extra: str = "") -> str:
    p = tmp_path / "vendedge.toml"
    line = f'secrets_file = "{secrets}"' if secrets else ""
    p.write_text(CFG.format(data=tmp_path / "data", secrets=line, extra=extra))
    return str(p)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_version_and_help_for_every_subcommand(capsys) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"vendedge {__version__}"
    code, out, _ = run(capsys, "--help")
    for cmd, words in [("run", "daemon"), ("check-config", "validate"), ("demo", "simulator"),
                       ("user", "accounts")]:
        assert cmd in out and words in out
    for cmd in ("run", "check-config", "demo", "user"):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0 and "--config" in out or "--scenario" in out
    code, out, _ = run(capsys, "user", "--help")
    assert "VENDEDGE_CONFIG" in out and "--password-stdin" in out


@pytest.mark.parametrize("make, allowed", [
    (lambda p: p.mkdir(), "directory"),
    (lambda p: p.write_bytes(b'[machine]\nid = "\xff"\n'), "UTF-8"),
    (lambda p: p.write_text("[machine\n"), "valid TOML"),
])
def test_unreadable_config_names_the_file_and_exits_2(tmp_path, capsys, make, allowed) -> None:
    path = tmp_path / "vendedge.toml"
    make(path)
    for cmd in ("check-config", "run"):
        code, _, err = run(capsys, cmd, "--config", str(path))
        assert code == 2 and str(path) in err and allowed in err


def test_user_add_without_config_names_the_missing_file_and_how_to_pass_one(tmp_path, capsys,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("VENDEDGE_CONFIG", str(tmp_path / "nope.toml"))
    code, _, err = run(capsys, "user", "add", "tech2")
    assert code == 2 and "nope.toml" in err and "--config" in err


def test_user_add_finds_the_config_through_vendedge_config(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VENDEDGE_CONFIG", write_cfg(tmp_path))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("a-long-password\n"))
    code, out, err = run(capsys, "user", "add", "tech2", "--password-stdin")
    assert code == 0 and "added tech2 (technician)" in out, err


def secrets_file(tmp_path, text: str, mode: int = 0o600) -> str:
    p = tmp_path / "secrets.toml"
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


@pytest.mark.parametrize("secrets, url, key", [
    ("MISSING", "http://127.0.0.1:9", "machine.secrets_file"),
    ("machine_secret = [", "http://127.0.0.1:9", "machine.secrets_file"),
    ('machine_secret = "abcd"', "http://127.0.0.1:9", "secrets.machine_secret"),
    ('machine_secret = "' + "ab" * 32 + '"', "http://cloud.example.com", "sync.url"),
    ('machine_secret = "' + "ab" * 32 + '"', "", "sync.url"),
])
def test_check_config_refuses_what_run_refuses(tmp_path, capsys, secrets, url, key) -> None:
    sf = str(tmp_path / "absent.toml") if secrets == "MISSING" else secrets_file(tmp_path, secrets)
    cfg = write_cfg(tmp_path, secrets=sf, extra=SYNC.format(url=url))
    code, out, err = run(capsys, "check-config", "--config", cfg)
    assert code == 2 and f"'{key}'" in err and "ok" not in out
    code, _, err = run(capsys, "run", "--config", cfg)
    assert code == 2 and f"'{key}'" in err


def test_check_config_ok_with_a_good_secrets_file(tmp_path, capsys) -> None:
    sf = secrets_file(tmp_path, 'machine_secret = "' + "ab" * 32 + '"')
    code, out, _ = run(capsys, "check-config", "--config",
                       write_cfg(tmp_path, secrets=sf, extra=SYNC.format(url="https://cloud.example.com")))
    assert code == 0 and out.startswith("ok:")

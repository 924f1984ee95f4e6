"""`python -m edge user add|list|remove` (edge/__main__.py -> edge.cli -> edge.cli_users) on a real ledger file."""

from __future__ import annotations

import subprocess
import sys


def _edge(cfg, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args, "--config", str(cfg)], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_python_dash_m_edge_adds_lists_refuses_a_duplicate_and_removes_an_account(tmp_path) -> None:
    cfg = tmp_path / "vendedge.toml"
    cfg.write_text(f'[machine]\nid = "m1"\ndata_dir = "{tmp_path / "data"}"\n[vend_board]\nport = "/dev/null"\n')

    added = _edge(cfg, "user", "add", "tech2", "--role", "viewer", "--password-stdin", stdin="a-long-password\n")
    assert (added.returncode, added.stdout) == (0, "added tech2 (viewer)\n")

    again = _edge(cfg, "user", "add", "tech2", "--password-stdin", stdin="another-password\n")
    assert again.returncode == 2 and "exists: tech2" in again.stderr

    listed = _edge(cfg, "user", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("tech2\tviewer\t")

    removed = _edge(cfg, "user", "remove", "tech2")
    assert (removed.returncode, removed.stdout) == (0, "removed\n")
    assert _edge(cfg, "user", "list").stdout == ""

"""`vendedge run` start-up failures end the process promptly with a clear message, never a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def test_run_with_its_web_port_taken_exits_promptly_non_zero(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "vendedge.toml"
        cfg.write_text(f'[machine]\nid = "m1"\ndata_dir = "{tmp_path / "data"}"\n'
                       f'[vend_board]\nport = "{tmp_path / "no-board"}"\n[web]\nport = {port}\n')
        done = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 1
    assert "start-up failed" in done.stderr and str(port) in done.stderr and "Traceback" not in done.stderr


def test_user_add_prints_no_colour_codes(tmp_path) -> None:
    cfg = tmp_path / "vendedge.toml"
    cfg.write_text(f'[machine]\nid = "m1"\ndata_dir = "{tmp_path / "data"}"\n[vend_board]\nport = "/dev/null"\n')
    done = subprocess.run([sys.executable, "-m", "edge.cli", "user", "add", "tech2", "--password-stdin",
                           "--config", str(cfg)], input="a-long-password\n", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == "added tech2 (technician)\n" and "\x1b[" not in done.stderr

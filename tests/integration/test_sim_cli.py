import json
import subprocess
import sys


def test_vendedge_sim_serves_devices_and_takes_faults_on_stdin(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hw_sim.cli", "--dir", str(tmp_path)],
        input="jam A1\ntake F1\ncam-fail shelf0 black\nbogus\nquit\n", capture_output=True, text=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    where = json.loads(lines[0])
    assert where["vend_board"].endswith("ttyVEND") and where["modbus_rtu"].endswith("ttyMODBUS")
    assert set(where["cameras"]) == {"shelf0", "shelf1", "shelf2", "shelf3"}
    assert lines[1:] == ["ok jam", "ok take cola", "ok cam-fail",
                         "error: ValueError(\"unknown command 'bogus'\"); see `vendedge-sim --help`"]
    assert proc.returncode == 0

"""Ctrl-C during a simulated day: every process of the run stops, and the report is still
written for what happened until then."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = [
    sys.executable,
    "-m",
    "cli",
    "demo",
    "--scenario",
    "short",
    "--speed",
    "200",
    "--no-pictures",
]


@pytest.mark.long
def test_ctrl_c_stops_every_process_and_still_reports(tmp_path: Path, pcsc: object) -> None:
    out = tmp_path / "run"
    demo = subprocess.Popen(
        [*DEMO, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        kiosk_log = out / "logs" / "kiosk-K1.log"
        while not (kiosk_log.exists() and "printed" in kiosk_log.read_text(errors="replace")):
            assert demo.poll() is None and time.monotonic() < deadline, "no ticket printed"
            time.sleep(0.2)
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert "interrupted" in output, output
    assert "Traceback" not in output, output
    assert (out / "report" / "report.html").exists() and (out / "report" / "tickets.csv").exists()
    left = subprocess.run(["pgrep", "-af", str(out)], capture_output=True, text=True).stdout
    assert not [line for line in left.splitlines() if "pgrep" not in line], left
    hall_log = (out / "logs" / "hall.log").read_text()
    assert "received SIGTERM" in hall_log and "Traceback" not in hall_log

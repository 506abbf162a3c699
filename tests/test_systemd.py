"""The systemd units: `systemd-analyze verify` on every one, and what they promise."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
QUHAO = Path(sys.executable).parent / "quhao"


def test_every_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make deps` installs the systemd package")
    names = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text().replace("/opt/quhao/venv/bin/quhao", str(QUHAO))
        name = unit.name.replace("@.", "@kiosk-K1." if "kiosk" in unit.name else "@counter-W1.")
        (tmp_path / name).write_text(text)
        names.append(name)
    assert len(names) == 4
    result = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_units_notify_restart_and_are_hardened() -> None:
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        assert "Type=notify" in text and "Restart=on-failure" in text, unit.name
        assert "ProtectSystem=strict" in text and "NoNewPrivileges=yes" in text, unit.name
        if unit.name.startswith(("quhao-kiosk", "quhao-counter")):
            assert "PrivateDevices=yes" not in text and "DeviceAllow=" in text, unit.name
            assert "SupplementaryGroups=dialout input" in text, unit.name
        if unit.name != "quhao-broker.service":
            assert "WatchdogSec=" in text and "DynamicUser=yes" in text, unit.name
            assert "StateDirectory=" in text and "LoadCredential=" in text, unit.name

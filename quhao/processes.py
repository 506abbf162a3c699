"""Child processes: start a `quhao` command, stop a process politely then firmly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO


def quhao(
    *args: str, log: IO[bytes] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python -m cli ARGS` with this interpreter."""
    return subprocess.Popen([sys.executable, "-m", "cli", *args], stdout=log, stderr=log, cwd=cwd)


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, and SIGKILL if it has not gone after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

"""Layers point one way (the contract is in pyproject.toml, [tool.importlinter]).

The command line, demo, benchmarks and chaos run (`cli`) on top; the daemons and
the simulators beside each other, none importing another; the shared core
(`quhao`) at the bottom, knowing none of them. An import that runs back up fails
here with the import chain that did it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_point_one_way() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout

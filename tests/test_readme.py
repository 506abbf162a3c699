"""The README's "Try the hall by hand" lines, run as written (taken from README.md between
its by-hand markers, so the two cannot drift): their own broker on a free port, a hall
whose clock makes it open at any hour, a ticket issued and called."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- by-hand -->", "<!-- /by-hand -->"


def by_hand_commands() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S)
    assert block, "no code block between the by-hand markers"
    return block.group(1)


@pytest.mark.long
def test_the_by_hand_section_works_as_written() -> None:
    script = by_hand_commands()
    assert "--clock" in script and "--dev" in script and "1883" not in script
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its background broker and hall: one group to stop
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        # whatever it left running in its group (it should have stopped both)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    compact = out.replace(" ", "")
    assert '"number":"K001"' in compact, out  # issued at 综合咨询
    assert "Connection refused" not in out and '"code":"closed"' not in compact, out

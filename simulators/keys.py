"""Keypad simulator: writes raw Linux `struct input_event` records into a FIFO.

The daemons read the FIFO through an `events:///path` keypad URI exactly as they
read /dev/input/eventN. (No /dev/uinput on these machines.)
"""

from __future__ import annotations

import os
import stat
import struct
import time
from pathlib import Path

from evdev import ecodes

_RECORD = struct.Struct("@qqHHi")  # the kernel's struct input_event on 64-bit


def _record(kind: int, code: int, value: int, at: float) -> bytes:
    sec = int(at)
    return _RECORD.pack(sec, int((at - sec) * 1e6), kind, code, value)


class KeypadFeeder:
    """Key presses into a FIFO, each stamped as the kernel stamps `struct input_event`
    (wall-clock seconds and microseconds). `advance` moves the feeder's clock ahead:
    later presses are stamped that much later, as if that time had passed between them
    (the daemons time keys by their stamps: debounce, the call lockout, the PIN stage)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            os.mkfifo(self.path)
        elif not stat.S_ISFIFO(self.path.stat().st_mode):
            raise ValueError(f"{self.path} exists and is not a FIFO")
        # O_RDWR: opening never blocks, even before the daemon has the FIFO open.
        self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self.ahead_s = 0.0

    def advance(self, seconds: float) -> None:
        """Stamp every later press `seconds` later than before."""
        self.ahead_s += seconds

    def now(self) -> float:
        """The time the next press is stamped with."""
        return time.time() + self.ahead_s

    def key(self, name: str, value: int) -> None:
        code = ecodes.ecodes[name]
        now = self.now()
        os.write(
            self.fd,
            _record(ecodes.EV_KEY, code, value, now)
            + _record(ecodes.EV_SYN, ecodes.SYN_REPORT, 0, now),
        )

    def tap(self, name: str, hold_s: float = 0.0) -> None:
        """Press and release, like a finger on the key."""
        self.key(name, 1)
        if hold_s:
            time.sleep(hold_s)
        self.key(name, 0)

    def type(self, *names: str, gap_s: float = 0.02) -> None:
        for name in names:
            self.tap(name)
            time.sleep(gap_s)

    def raw(self, data: bytes) -> None:
        """Anything at all, e.g. a corrupt record, for tests of robustness."""
        os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)

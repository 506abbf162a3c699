"""LED window display simulator on a pseudo-terminal, speaking the `quhao-led` frame.

The display's side of the protocol is written here from the spec in
docs/devices.md, independently of the driver's codec, so a test through it checks
the driver against a second reading of the protocol.

The pty's slave is reachable at a fixed path (a symlink), as a USB serial adapter
is at /dev/ttyUSBn. `unplug()` closes the pty (the driver sees EIO);
`replug()` makes a new one behind the same path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sim.led")

STX, ETX = 0x02, 0x03


@dataclass
class Shown:
    text: str
    flash: bool
    at: float = field(default_factory=time.perf_counter)  # when the frame was read


class LedSimulator:
    def __init__(
        self,
        link: str | Path,
        address: int,
        snapshots: Path | None = None,
        snapshot_limit: int | None = None,
    ) -> None:
        self.link = Path(link)
        self.address = address
        self.snapshots = snapshots
        # Drawing a PNG takes tens of ms in the thread that answers the display protocol:
        # a busy simulated window draws only its first few texts, or its ACKs come late.
        self.snapshot_limit = snapshot_limit
        self.text = ""
        self.history: list[Shown] = []
        self.errors: list[str] = []
        self.frames_seen = 0
        self.changed = threading.Condition()
        self.master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- plugging -----------------------------------------------------------

    def start(self) -> LedSimulator:
        self.replug()
        return self

    def replug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self.master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"led-{self.address}", daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        self.link.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    close = unplug

    # ---- the display --------------------------------------------------------

    def _serve(self) -> None:
        buffer = bytearray()
        master = self.master
        assert master is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                continue  # no reader on the slave side yet
            buffer += chunk
            self._parse(buffer, master)

    def _parse(self, buffer: bytearray, master: int) -> None:
        while True:
            start = buffer.find(bytes([STX]))
            if start < 0:
                buffer.clear()
                return
            del buffer[:start]
            if len(buffer) < 5:
                return
            length = (buffer[3] << 8) | buffer[4]
            total = 5 + length + 2
            if length > 1024:
                self.errors.append("length")
                del buffer[0]
                continue
            if len(buffer) < total:
                return
            frame = bytes(buffer[:total])
            address, command = frame[1], frame[2]
            data = frame[5 : 5 + length]
            check = 0
            for byte in frame[1 : 5 + length]:
                check ^= byte
            if frame[-1] != ETX:
                self.errors.append("framing")
                del buffer[0]
                continue
            del buffer[:total]
            if address not in (self.address, 0xFF):
                continue
            if frame[-2] != check:
                self.errors.append("checksum")
                self._answer(master, 0x15, bytes([command, 1]))
                continue
            self.frames_seen += 1
            if command == 0x31 and data:
                try:
                    text = data[1:].decode("gbk")
                except UnicodeDecodeError:
                    self._answer(master, 0x15, bytes([command, 4]))
                    continue
                self._show(text, data[0] == 1)
            elif command == 0x32:
                self._show("", False)
            elif command != 0x33:
                self._answer(master, 0x15, bytes([command, 3]))
                continue
            if address != 0xFF:
                self._answer(master, 0x06, bytes([command]))

    def _answer(self, master: int, command: int, data: bytes) -> None:
        body = bytes([self.address, command, len(data) >> 8, len(data) & 0xFF]) + data
        check = 0
        for byte in body:
            check ^= byte
        with contextlib.suppress(OSError):  # nobody has the port open: like a real line
            os.write(master, bytes([STX]) + body + bytes([check, ETX]))

    def _show(self, text: str, flash: bool) -> None:
        with self.changed:
            self.text = text
            self.history.append(Shown(text, flash))
            self.changed.notify_all()
        if self.snapshots is not None and (
            self.snapshot_limit is None or len(self.history) <= self.snapshot_limit
        ):
            from simulators.render import led_strip

            led_strip(text, self.snapshots / f"led-{self.address}-{len(self.history):04d}.png")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.text):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"LED {self.address} shows {self.text!r}, not what "
                        f"was expected within {timeout:g} s"
                    )
                self.changed.wait(remaining)
            return self.text

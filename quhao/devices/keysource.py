"""Key events from a keypad URI, whatever the keypad is plugged into.

- `evdev:///dev/input/by-id/…` or `evdev://?name=…`: a real input device, found by
  path or by name, grabbed (its keys do not leak into a console), reopened when it
  comes back after being unplugged.
- `events:///path`: a stream of raw `struct input_event` records, e.g. a FIFO
  written by the keypad simulator (no /dev/uinput on these machines).

Both are read as raw bytes and decoded by `inputevent.Decoder`: one decoding path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from quhao.devices import uri as uris
from quhao.devices.inputevent import Decoder, KeyEvent

if TYPE_CHECKING:  # imported when opened: only the evdev scheme needs the library
    from evdev import InputDevice

log = logging.getLogger("quhao.keys")

RETRY_S = 1.0


class KeySource:
    def __init__(
        self, uri: str, label: str, on_state: Callable[[bool, str], None] | None = None
    ) -> None:
        self.uri = uris.parse(uri, ("evdev", "events"))
        self.label = label
        self.on_state = on_state or (lambda ok, detail: None)
        self._device: InputDevice[str] | None = None  # while open (evdev scheme)

    def run(self, on_key: Callable[[KeyEvent], None], stop: threading.Event) -> None:
        """Deliver key events until stop is set; survives the device going away."""
        reported = None
        while not stop.is_set():
            try:
                fd = self._open()
            except OSError as exc:
                if reported != str(exc):
                    log.warning("%s: keypad %s unavailable: %s", self.label, self.uri, exc)
                    self.on_state(False, f"unavailable: {exc.strerror or exc}")
                    reported = str(exc)
                stop.wait(RETRY_S)
                continue
            log.info("%s: keypad %s open", self.label, self.uri)
            self.on_state(True, "ok")
            reported = None
            try:
                self._pump(fd, on_key, stop)
            except OSError as exc:
                log.warning("%s: keypad %s lost: %s", self.label, self.uri, exc)
                self.on_state(False, f"lost: {exc.strerror or exc}")
                reported = "lost"
            finally:
                self._close(fd)

    def _open(self) -> int:
        if self.uri.scheme == "events":
            mode = os.stat(self.uri.path).st_mode
            # O_RDWR on a FIFO: we never see end-of-file when a writer closes.
            flags = os.O_RDWR if stat.S_ISFIFO(mode) else os.O_RDONLY
            return os.open(self.uri.path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
        import evdev

        path = self.uri.path
        if not path:
            wanted = self.uri.params.get("name", "")
            path = next(
                (p for p in evdev.list_devices() if evdev.InputDevice(p).name == wanted), ""
            )
            if not path:
                raise OSError(errno.ENODEV, f"no input device named {wanted!r}")
        device = evdev.InputDevice(path)
        if self.uri.params.get("grab", "1") != "0":
            device.grab()
        self._device = device
        return device.fd

    def _close(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            if self._device is not None:
                self._device.close()
            else:
                os.close(fd)
        self._device = None

    def _pump(self, fd: int, on_key: Callable[[KeyEvent], None], stop: threading.Event) -> None:
        decoder = Decoder()
        regular_file = self.uri.scheme == "events" and stat.S_ISREG(os.fstat(fd).st_mode)
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not data:
                if regular_file:
                    stop.wait(0.2)  # a file being appended to: wait for more
                    continue
                raise OSError(errno.ENODEV, "device closed")
            skipped = decoder.corrupt
            for key in decoder.feed(data):
                on_key(key)
            if decoder.corrupt != skipped:
                log.warning("%s: %s", self.label, decoder.last_problem)

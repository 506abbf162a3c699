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
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from quhao.devices import uri as uris
from quhao.devices.inputevent import Decoder, KeyEvent
from quhao.owner import OwnerLoop

if TYPE_CHECKING:  # imported when opened: only the evdev scheme needs the library
    from evdev import InputDevice

log = logging.getLogger("quhao.keys")

RETRY_S = 1.0
FILE_POLL_S = 0.05  # events:// on a regular file: how often to look for appended records


class KeySource:
    _loop: OwnerLoop
    _on_key: Callable[[KeyEvent], None]

    def __init__(
        self, uri: str, label: str, on_state: Callable[[bool, str], None] | None = None
    ) -> None:
        self.uri = uris.parse(uri, ("evdev", "events"))
        self.label = label
        self.on_state = on_state or (lambda ok, detail: None)
        self._device: InputDevice[str] | None = None  # while open (evdev scheme)
        self._fd: int | None = None
        self._decoder = Decoder()
        self._reported: str | None = None

    def attach(self, loop: OwnerLoop, on_key: Callable[[KeyEvent], None]) -> None:
        """Deliver key events in the owner loop (its select watches the device), for the
        loop's life; survives the device going away by reopening it every second."""
        self._loop, self._on_key = loop, on_key
        self._open_in_loop()

    def _open_in_loop(self) -> None:
        loop = self._loop
        try:
            fd = self._open()
        except OSError as exc:
            if self._reported != str(exc):
                log.warning("%s: keypad %s unavailable: %s", self.label, self.uri, exc)
                self.on_state(False, f"unavailable: {exc.strerror or exc}")
                self._reported = str(exc)
            loop.call_later(RETRY_S, self._open_in_loop)
            return
        log.info("%s: keypad %s open", self.label, self.uri)
        self.on_state(True, "ok")
        self._reported = None
        self._fd, self._decoder = fd, Decoder()
        if self.uri.scheme == "events" and stat.S_ISREG(os.fstat(fd).st_mode):
            # A regular file being appended to is always "readable": poll it instead.
            loop.every(FILE_POLL_S, self._readable)
        else:
            loop.watch(fd, self._readable)

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            if self._regular_file(fd):
                return  # nothing appended yet
            self._lost(OSError(errno.ENODEV, "device closed"))
            return
        skipped = self._decoder.corrupt
        for key in self._decoder.feed(data):
            self._on_key(key)
        if self._decoder.corrupt != skipped:
            log.warning("%s: %s", self.label, self._decoder.last_problem)

    def _regular_file(self, fd: int) -> bool:
        return self.uri.scheme == "events" and stat.S_ISREG(os.fstat(fd).st_mode)

    def _lost(self, exc: OSError) -> None:
        log.warning("%s: keypad %s lost: %s", self.label, self.uri, exc)
        self.on_state(False, f"lost: {exc.strerror or exc}")
        self._reported = "lost"
        fd, self._fd = self._fd, None
        if fd is not None:
            self._loop.unwatch(fd)
            self._close(fd)
        self._loop.call_later(RETRY_S, self._open_in_loop)

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

"""The LED window display driver: a protocol (counter.led) over a serial port.

URI: `serial:///dev/ttyUSB1?baud=9600&addr=5[&protocol=quhao-led]`.

The counter says what the display should show (`show`); a worker thread makes
it so, waits for the display's ACK, retries, and keeps trying through an
unplugged cable — reopening the port, then sending the current text again. Its
state (`ok`, `no_answer`, `offline`) goes to the callback for device status.
Until the counter has said what to show (it waits for the window state), the
display is only pinged: it keeps what it showed, never a blank frame.
"""

from __future__ import annotations

import contextlib
import logging
import termios
import threading
import time
from collections.abc import Callable

import serial

from counter.led import protocol_named
from counter.led.base import Reply
from quhao.devices import uri as uris
from quhao.devices.state import DeviceState

log = logging.getLogger("quhao.led")

# pyserial lets termios.error (not an OSError) through from tcflush on a dead port.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)
REPLY_TIMEOUT_S = 0.3
ATTEMPTS = 3
PING_EVERY_S = 2.0
REOPEN_EVERY_S = 1.0


class LedDisplay:
    def __init__(
        self, uri: str, label: str, on_state: Callable[[str, str], None] | None = None
    ) -> None:
        self.uri = uris.parse(uri, ("serial",))
        self.label = label
        self.address = self.uri.int_param("addr", 1)
        self.baud = self.uri.int_param("baud", 9600)
        self.protocol = protocol_named(self.uri.params.get("protocol", "quhao-led"))
        self.health = DeviceState("display", label, log, on_state)
        self._wanted: tuple[str, bool] = ("", False)
        self._version = 0  # bumps on every show(); a recall of the same text bumps too
        # 0: nothing said yet. The worker then sends no SHOW at all, so the display is
        # not blanked at start-up before the window state has arrived.
        self._changed = threading.Condition()
        self._port: serial.Serial | None = None

    # ---- the counter's side -------------------------------------------------

    def show(self, text: str, flash: bool = False) -> None:
        with self._changed:
            self._wanted = (text, flash)
            self._version += 1
            self._changed.notify()

    # ---- the worker ---------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._serve(stop)
            except Exception:  # a driver bug must not leave the window dark for good
                log.exception("%s: display worker failed; starting again", self.label)
                self._close()
                stop.wait(REOPEN_EVERY_S)

    def _serve(self, stop: threading.Event) -> None:
        sent_version = -1  # -1: (re)send what is wanted as soon as the port is open
        last_contact = 0.0
        while not stop.is_set():
            if self._port is None and not self._open():
                stop.wait(REOPEN_EVERY_S)
                continue
            with self._changed:
                if self._version == sent_version:
                    self._changed.wait(max(0.0, PING_EVERY_S - (time.monotonic() - last_contact)))
                version, (text, flash) = self._version, self._wanted
            if stop.is_set():
                break
            if version == 0 and sent_version == -1:
                sent_version = 0  # nothing to show yet: ping, and send the first text when told
            if version != sent_version:
                if self._exchange(self.protocol.show(self.address, text, flash)):
                    sent_version = version
                    last_contact = time.monotonic()
                    log.debug(
                        "%s: display shows %r%s", self.label, text, " (flashing)" if flash else ""
                    )
                else:
                    sent_version = -1  # send it again once the display is back
            elif time.monotonic() - last_contact >= PING_EVERY_S:
                if self._exchange(self.protocol.ping(self.address)):
                    last_contact = time.monotonic()
                else:
                    sent_version = -1
        self._close()

    def _open(self) -> bool:
        try:
            self._port = serial.Serial(self.uri.path, self.baud, timeout=0, write_timeout=1.0)
            self._port.reset_input_buffer()
        except PORT_ERRORS as exc:
            self._close()
            self.health.set("offline", f"cannot open {self.uri.path}: {exc}")
            return False
        log.info("%s: display port %s open", self.label, self.uri.path)
        return True

    def _close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(*PORT_ERRORS):
                self._port.close()
            self._port = None

    def _exchange(self, frame: bytes) -> bool:
        """Send a frame until the display acknowledges it. False if it never did."""
        port = self._port
        if port is None:
            return False
        problem = ""
        for _ in range(ATTEMPTS):
            try:
                port.reset_input_buffer()
                port.write(frame)
                port.flush()
                if not self.protocol.expects_reply:
                    self.health.set("ok", "")
                    return True
                reply = self._await_reply(port)
            except PORT_ERRORS as exc:
                self._close()
                self.health.set("offline", f"port lost: {exc}")
                return False
            if reply is None:
                problem = "no answer"
            elif reply.ok:
                self.health.set("ok", "")
                return True
            else:
                problem = reply.detail
                log.warning("%s: %s", self.label, reply.detail)
        self.health.set("no_answer", problem)
        self._close()  # reopen next time: a replugged adapter is a new device
        return False

    def _await_reply(self, port: serial.Serial) -> Reply | None:
        parser = self.protocol.reply_parser()
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while (remaining := deadline - time.monotonic()) > 0:
            port.timeout = remaining  # a blocking read: woken by the first byte
            data = port.read(max(1, port.in_waiting))
            replies = parser.feed(data) if data else []
            if replies:
                return replies[0]
        return None

"""The LED window display driver: a protocol (counter.led) over a serial port.

URI: `serial:///dev/ttyUSB1?baud=9600&addr=5[&protocol=quhao-led]`.

The counter says what the display should show (`show`); the driver makes it so in
the counter's owner loop: it writes the frame at once, lets the loop's select wake
it for the display's ACK, retries on the loop's timers, and keeps trying through an
unplugged cable — reopening the port, then sending the current text again. Its
state (`ok`, `no_answer`, `offline`) goes to the callback for device status.
Until the counter has said what to show (it waits for the window state), the
display is only pinged: it keeps what it showed, never a blank frame.
"""

from __future__ import annotations

import contextlib
import logging
import termios
from collections.abc import Callable
from dataclasses import dataclass

import serial

from counter.led import protocol_named
from counter.led.base import ReplyParser
from quhao.devices import led
from quhao.devices import uri as uris
from quhao.devices.state import DeviceState
from quhao.owner import OwnerLoop, Timer

log = logging.getLogger("quhao.led")

# pyserial lets termios.error (not an OSError) through from tcflush on a dead port.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)
REPLY_TIMEOUT_S = 0.3
ATTEMPTS = 3
PING_EVERY_S = 2.0
REOPEN_EVERY_S = 1.0


@dataclass
class _Exchange:
    """A frame on its way: sent, waiting for the display's answer."""

    frame: bytes
    version: int | None  # the text version it shows; None for a ping
    parser: ReplyParser
    attempt: int = 1
    timer: Timer | None = None
    problem: str = ""


class LedDisplay:
    def __init__(
        self, uri: str, label: str, on_state: Callable[[str, str], None] | None = None
    ) -> None:
        self.uri = uris.parse(uri, ("serial",))
        self.label = label
        self.address = self.uri.int_param("addr", 1)
        self.baud = self.uri.int_param("baud", 9600)
        self.protocol = protocol_named(self.uri.params.get("protocol", led.DEFAULT_PROTOCOL))
        self.health = DeviceState("display", label, log, on_state)
        self._wanted: tuple[str, bool] = ("", False)
        self._version = 0  # bumps on every show(); a recall of the same text bumps too
        # 0: nothing said yet: no SHOW is sent at all, so the display is not blanked at
        # start-up before the window state has arrived. -1: send what is wanted again.
        self._sent_version = -1
        self._port: serial.Serial | None = None
        self._exchange: _Exchange | None = None
        self._ping: Timer | None = None

    def attach(self, loop: OwnerLoop) -> None:
        """Drive the display from the owner loop, for the loop's life."""
        self._loop = loop
        self._reopen()

    # ---- the counter's side -------------------------------------------------

    def show(self, text: str, flash: bool = False) -> None:
        self._wanted = (text, flash)
        self._version += 1
        self._next()

    # ---- the driver ---------------------------------------------------------

    def _next(self) -> None:
        """Start the next exchange, if the port is open and none is under way."""
        if self._port is None or self._exchange is not None:
            return
        if self._version == 0 and self._sent_version == -1:
            self._sent_version = 0  # nothing to show yet: ping, send the first text when told
        if self._version != self._sent_version:
            text, flash = self._wanted
            self._send(self.protocol.show(self.address, text, flash), self._version)
        elif self._ping is None:
            self._ping = self._loop.call_later(PING_EVERY_S, self._ping_now)

    def _ping_now(self) -> None:
        self._ping = None
        if self._port is not None and self._exchange is None:
            self._send(self.protocol.ping(self.address), None)

    def _send(self, frame: bytes, version: int | None) -> None:
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        exchange = _Exchange(frame, version, self.protocol.reply_parser())
        self._exchange = exchange
        self._write(exchange)

    def _write(self, exchange: _Exchange) -> None:
        port = self._port
        assert port is not None
        try:
            port.reset_input_buffer()
            port.write(exchange.frame)
            port.flush()
        except PORT_ERRORS as exc:
            self._fail("offline", f"port lost: {exc}")
            return
        if not self.protocol.expects_reply:
            self._done(exchange)
            return
        exchange.timer = self._loop.call_later(REPLY_TIMEOUT_S, self._no_answer)

    def _readable(self) -> None:
        exchange, port = self._exchange, self._port
        if port is None:
            return
        try:
            data = port.read(max(1, port.in_waiting))
        except PORT_ERRORS as exc:
            self._fail("offline", f"port lost: {exc}")
            return
        if exchange is None or not data:
            return  # nothing asked: a stray byte
        for reply in exchange.parser.feed(data):
            if reply.ok:
                self._done(exchange)
                return
            exchange.problem = reply.detail
            log.warning("%s: %s", self.label, reply.detail)
            self._again(exchange)
            return

    def _no_answer(self) -> None:
        exchange = self._exchange
        if exchange is not None:
            exchange.problem = exchange.problem or "no answer"
            self._again(exchange)

    def _again(self, exchange: _Exchange) -> None:
        if exchange.timer is not None:
            exchange.timer.cancel()
        if exchange.attempt >= ATTEMPTS:
            # Reopen next time: a replugged adapter is a new device.
            self._fail("no_answer", exchange.problem)
            return
        exchange.attempt += 1
        exchange.parser = self.protocol.reply_parser()
        self._write(exchange)

    def _done(self, exchange: _Exchange) -> None:
        if exchange.timer is not None:
            exchange.timer.cancel()
        self._exchange = None
        self.health.set("ok", "")
        if exchange.version is not None:
            self._sent_version = exchange.version
            text, flash = self._wanted
            log.debug("%s: display shows %r%s", self.label, text, " (flashing)" if flash else "")
        self._next()

    def _fail(self, state: str, detail: str) -> None:
        if self._exchange is not None and self._exchange.timer is not None:
            self._exchange.timer.cancel()
        self._exchange = None
        self._sent_version = -1  # send it again once the display is back
        self._close()
        self.health.set(state, detail)
        self._loop.call_later(REOPEN_EVERY_S, self._reopen)

    def _reopen(self) -> None:
        if not self._open():
            self._loop.call_later(REOPEN_EVERY_S, self._reopen)
            return
        assert self._port is not None
        self._loop.watch(self._port.fileno(), self._readable)
        self._next()

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
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(*PORT_ERRORS):
                self._loop.unwatch(port.fileno())
            with contextlib.suppress(*PORT_ERRORS):
                port.close()

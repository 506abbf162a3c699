"""GA 467 SAM ID-card reader on a serial port (pyserial): the card's full text.

URI: `serial:///dev/ttyUSB0?baud=115200`.

At start: reset (10 FF) and status (11 FF). Then it polls: find card (20 01) →
select (20 02) → read base message (30 01).

One presentation, one read (`quhao.devices.presence`): a card that stays on the
reader is read once. A single "no card" answer to find is not the card leaving —
real readers drop out for a poll or two — the card counts as removed only after
find has said "no card" for `absent_s` without a break. The find answer does not
say which card is there, so after any break the card is read again and compared
with the held one by a keyed digest of its text (in memory only, never logged):
the same card within `absent_s` is not delivered again; a different card is.

SW3 results other than success are logged with their meaning; a damaged frame
(checksum, length) is logged and dropped — never a crash — and the exchange is
tried again at the next poll. The port going away is reported and the port
reopened; a card held before that is still held (silence is not absence).
"""

from __future__ import annotations

import contextlib
import logging
import termios
import threading
import time
from collections.abc import Callable

import serial

from kiosk import sam
from quhao.devices import uri as uris
from quhao.devices.cards import CardRead
from quhao.devices.presence import DEFAULT_ABSENT_S, Fingerprints, Presence
from quhao.devices.state import DeviceState

log = logging.getLogger("quhao.sam")

PORT_ERRORS = (serial.SerialException, OSError, termios.error)
# How often "find card" is sent while no card is being read. A find is a 10-byte
# command and an 11-byte answer: under 2 ms of a 115200-baud line, so polling every
# 50 ms keeps the line and the module idle over 95% of the time while a card laid on
# the reader is noticed within 50 ms (25 ms on average) -- well inside the module's
# own RF search and the time a hand takes to settle the card. `quhao bench kiosk`
# reports this interval next to the figures it does not include.
POLL_S = 0.05
ANSWER_TIMEOUT_S = 0.6  # a base message is ~1.3 kB: 112 ms at 115200 baud
RETRY_S = 1.0


class SamReader:
    def __init__(
        self,
        uri: str,
        label: str,
        on_card: Callable[[CardRead], None],
        on_state: Callable[[str, str], None] | None = None,
        *,
        absent_s: float = DEFAULT_ABSENT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`absent_s`: how long find must say "no card" before the card counts as
        removed; `clock`: monotonic seconds (injectable for tests)."""
        self.uri = uris.parse(uri, ("serial",))
        self.baud = self.uri.int_param("baud", 115200)
        self.label = label
        self.on_card = on_card
        self.health = DeviceState("SAM reader", label, log, on_state)
        self.dropped_frames = 0
        self._port: serial.Serial | None = None
        self._decoder = sam.Decoder()
        self.presence = Presence(absent_s)
        self.clock = clock
        self._fingerprints = Fingerprints()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._port = serial.Serial(self.uri.path, self.baud, timeout=0.05)
                self._port.reset_input_buffer()
            except PORT_ERRORS as exc:
                self.health.set("offline", f"cannot open {self.uri.path}: {exc}")
                self._close()
                stop.wait(RETRY_S)
                continue
            try:
                self._serve(stop)
            except PORT_ERRORS as exc:
                self.health.set("offline", f"port lost: {exc}")
            finally:
                self._close()
            stop.wait(RETRY_S)

    def _close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(*PORT_ERRORS):
                self._port.close()
            self._port = None

    def _serve(self, stop: threading.Event) -> None:
        self._decoder = sam.Decoder()
        self._exchange(sam.RESET)
        status = self._exchange(sam.STATUS)
        if status is None or not status.ok:
            self.health.set(
                "fault",
                "SAM does not answer status" if status is None else f"SAM status: {status.meaning}",
            )
            return
        self.health.set("ok", "")
        while not stop.is_set():
            found = self._exchange(sam.FIND_CARD)
            if found is None:
                stop.wait(POLL_S)
                continue
            if found.sw3 != sam.FOUND:
                if found.sw3 == sam.NO_CARD:
                    self.presence.absent(self.clock())
                else:  # an error is no evidence either way
                    log.debug("%s: find: %s", self.label, found.meaning)
                stop.wait(POLL_S)
                continue
            detected_at = time.monotonic()
            if not self.presence.present(self.clock()):
                stop.wait(POLL_S)  # the same card, still there
                continue
            selected = self._exchange(sam.SELECT_CARD)
            if selected is None or not selected.ok:
                if selected is not None:
                    log.info("%s: select: %s", self.label, selected.meaning)
                continue
            message = self._exchange(sam.READ_BASE)
            if message is None or not message.ok:
                if message is not None:
                    log.warning("%s: read: %s", self.label, message.meaning)
                continue
            try:
                identity = sam.parse_base_message(message.data)
            except sam.FrameError as exc:
                log.warning("%s: unreadable card text: %s", self.label, exc)
                continue
            card = self._fingerprints.of(message.data[4 : 4 + 256])  # the card's text
            if self.presence.identified(card, self.clock()):
                self.on_card(
                    CardRead(
                        self.label,
                        identity=identity,
                        detected_at=detected_at,
                        read_at=time.monotonic(),
                    )
                )
            else:
                log.debug("%s: the same card, back after a dropout: not read again", self.label)

    def _exchange(self, cmd: tuple[int, int]) -> sam.Response | None:
        port = self._port
        assert port is not None
        port.write(sam.command(cmd))
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while (remaining := deadline - time.monotonic()) > 0:
            port.timeout = remaining
            data = port.read(max(1, port.in_waiting))
            for item in self._decoder.feed(data):
                if isinstance(item, sam.FrameError):
                    self.dropped_frames += 1
                    log.warning("%s: dropped a damaged SAM frame: %s", self.label, item)
                    continue
                try:
                    return sam.parse_response(item)
                except sam.FrameError as exc:
                    log.warning("%s: dropped a SAM frame: %s", self.label, exc)
        return None

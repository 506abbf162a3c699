"""GA 467 SAM ID-card reader on a serial port (pyserial): the card's full text.

URI: `serial:///dev/ttyUSB0?baud=115200`.

At start: reset (10 FF) and status (11 FF). Then it polls: find card (20 01) →
select (20 02) → read base message (30 01).

Driven by the kiosk's owner loop, as the counter's LED display is (`attach`): the
port is non-blocking and in the loop's select, each command is written at once,
the answer's frames are assembled from whatever bytes arrived, and the find poll,
answer timeouts and reopening the port are the loop's timers. No thread of its own:
a card found is handed to the kiosk in the same thread, at once. The exchange
itself is the pure `kiosk.readers.sam_poller.SamPoller`; this is its I/O.

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
from collections.abc import Callable

import serial

from kiosk.readers.sam_poller import (
    RETRY_S,
    Card,
    Health,
    Note,
    Noticed,
    Output,
    SamPoller,
    Send,
)
from quhao.devices import uri as uris
from quhao.devices.cards import CardRead
from quhao.devices.presence import DEFAULT_ABSENT_S, Presence
from quhao.devices.state import DeviceState
from quhao.owner import OwnerLoop, Timer

log = logging.getLogger("quhao.sam")

# pyserial lets termios.error (not an OSError) through from tcflush on a dead port.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)


class SamReader:
    def __init__(
        self,
        uri: str,
        label: str,
        on_card: Callable[[CardRead], None],
        on_state: Callable[[str, str], None] | None = None,
        *,
        absent_s: float = DEFAULT_ABSENT_S,
        on_noticed: Callable[[], None] | None = None,
    ) -> None:
        """`on_card`, `on_state` and `on_noticed` (a card may be there; its data is being
        read) are called in the owner loop's thread. `absent_s`: how long find must say
        "no card" before the card counts as removed. Times are the loop's own monotonic
        clock."""
        self.uri = uris.parse(uri, ("serial",))
        self.baud = self.uri.int_param("baud", 115200)
        self.label = label
        self.on_card = on_card
        self.on_noticed = on_noticed
        self.health = DeviceState("SAM reader", label, log, on_state)
        self.poller = SamPoller(absent_s)
        self._port: serial.Serial | None = None
        self._timer: Timer | None = None
        self._timer_for: float | None = None  # the poller deadline `_timer` is set for
        self._reopening: Timer | None = None
        self._loop: OwnerLoop | None = None

    @property
    def presence(self) -> Presence:
        return self.poller.presence

    @property
    def dropped_frames(self) -> int:
        return self.poller.dropped_frames

    def attach(self, loop: OwnerLoop) -> None:
        """Drive the reader from the owner loop, for the loop's life (or until `close`)."""
        self._loop = loop
        self._reopen()

    def close(self) -> None:
        """Stop: the port closed, no timer left. Call it in the owner thread."""
        for timer in (self._timer, self._reopening):
            if timer is not None:
                timer.cancel()
        self._timer = self._reopening = None
        self._close()
        self._loop = None

    # ---- the port ---------------------------------------------------------------

    def _reopen(self) -> None:
        self._reopening = None
        loop = self._loop
        if loop is None:
            return
        try:
            port = serial.Serial(self.uri.path, self.baud, timeout=0, write_timeout=1.0)
            port.reset_input_buffer()
        except PORT_ERRORS as exc:
            self.health.set("offline", f"cannot open {self.uri.path}: {exc}")
            self._reopening = loop.call_later(RETRY_S, self._reopen)
            return
        self._port = port
        loop.watch(port.fileno(), self._readable)
        self._do(self.poller.opened(loop.monotonic()))

    def _readable(self) -> None:
        port, loop = self._port, self._loop
        if port is None or loop is None:
            return
        try:
            data = port.read(port.in_waiting or 1)
        except PORT_ERRORS as exc:
            self._lost(exc)
            return
        if data:
            self._do(self.poller.received(data, loop.monotonic()))

    def _due(self) -> None:
        self._timer = None
        if self._loop is not None:
            self._do(self.poller.due(self._loop.monotonic()))

    def _do(self, outputs: list[Output]) -> None:
        """Carry out what the poller said, in order; then wait for its next deadline."""
        for output in outputs:
            if isinstance(output, Send):
                if not self._write(output.frame):
                    return
            elif isinstance(output, Card):
                self._deliver(output)
            elif isinstance(output, Noticed):
                self._noticed()
            elif isinstance(output, Health):
                self.health.set(output.state, output.detail)
            elif isinstance(output, Note):
                log.log(output.level, "%s: %s", self.label, output.text)
        self._schedule()

    def _write(self, frame: bytes) -> bool:
        port = self._port
        if port is None:
            return False
        try:
            port.write(frame)
        except PORT_ERRORS as exc:
            self._lost(exc)
            return False
        return True

    def _deliver(self, card: Card) -> None:
        read = CardRead(
            self.label, identity=card.identity, detected_at=card.detected_at, read_at=card.read_at
        )
        try:
            self.on_card(read)
        except Exception:  # the kiosk's trouble with one card must not stop the reader
            log.exception("%s: handling a card failed", self.label)

    def _noticed(self) -> None:
        if self.on_noticed is None:
            return
        try:
            self.on_noticed()
        except Exception:  # readying for a card must not stop the reader
            log.exception("%s: readying for a card failed", self.label)

    def _schedule(self) -> None:
        """One timer, at the poller's deadline (moved when the deadline moves)."""
        loop, deadline = self._loop, self.poller.deadline
        if self._timer is not None:
            if self._timer_for == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if loop is not None and deadline is not None and self._port is not None:
            self._timer = loop.call_later(deadline - loop.monotonic(), self._due)
            self._timer_for = deadline

    def _lost(self, exc: BaseException) -> None:
        self.health.set("offline", f"port lost: {exc}")
        self._close()
        self.poller.closed()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None and self._reopening is None:
            self._reopening = self._loop.call_later(RETRY_S, self._reopen)

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        if self._loop is not None:
            with contextlib.suppress(*PORT_ERRORS):
                self._loop.unwatch(port.fileno())
        with contextlib.suppress(*PORT_ERRORS):
            port.close()

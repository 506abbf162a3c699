"""The GA 467 SAM reader's exchange as a pure state machine: bytes and time in, what to
do out. No port, no clock, no thread (the I/O is `kiosk.readers.sam_serial`).

One command is in flight at a time; the SAM answers each in order:

    (port opened)  reset 10 FF ─► status 11 FF ─ ok ─► find 20 01 every `poll_s`
                                       │ not ok / no answer: fault, start again after retry_s
    find: 9F card found ─ a new presentation may be there (Presence.present): `Noticed` ─►
          select 20 02 ─ ok ─► read base message 30 01 ─ ok ─► fingerprint the text:
          a new presentation (Presence.identified) → `Card`; the same card → nothing
    find: 80 no card → Presence.absent; any other answer or none: no evidence

A failed select or read is tried again at once (find → select → read); a find, or a
read that is done, waits `poll_s` for the next find. An answer that does not come
within `answer_timeout_s` counts as none, and the bytes of a frame cut short are
dropped with it; `UNANSWERED` commands in a row without an answer while polling put
the SAM at fault, started again as above (a card held stays held: silence is not
absence). A damaged frame is counted, reported and dropped; the exchange
waits on for its answer until the timeout. A frame while no command is in flight
is stale (the answer to one that timed out) and dropped.

The caller passes what arrived (`received`), calls `due` once `deadline` has come, and
says when the port was (re)opened or lost. Presence and the fingerprints outlive
the port: a card held before the port went away is still held when it comes back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kiosk import sam
from quhao.devices.cards import Identity
from quhao.devices.presence import DEFAULT_ABSENT_S, Fingerprints, Presence

# How often "find card" is sent while no card is being read, counted from the last
# answer: one command is in flight at a time, so a module is never asked faster than
# it answers, whatever its own RF search takes. A find is a 10-byte command and an
# 11-byte answer, under 2 ms of a 115200-baud line, so a find every 50 ms leaves the
# line idle over 95% of the time. A card laid on the reader is noticed within 50 ms
# (25 ms on average), less than a hand takes to settle it; polling faster would buy
# the citizen nothing they could notice. `quhao bench kiosk` reports this interval
# next to its figures, which start when the card is noticed.
POLL_S = 0.05
ANSWER_TIMEOUT_S = 0.6  # a base message is ~1.3 kB: 112 ms at 115200 baud
RETRY_S = 1.0  # a SAM that failed its status is started again (reset, status) after this
UNANSWERED = 3  # commands in a row without an answer while polling: the SAM is at fault
TEXT = slice(4, 4 + 256)  # the card's text in a base message: what tells cards apart


@dataclass(frozen=True)
class Send:
    """Write these bytes to the port."""

    frame: bytes


@dataclass(frozen=True)
class Card:
    """A new presentation: deliver it once. Holds personal data: never log it."""

    identity: Identity
    detected_at: float  # when the find that noticed it was answered
    read_at: float  # when the base message was all in

    def __repr__(self) -> str:
        return "Card(<card data withheld>)"


@dataclass(frozen=True)
class Noticed:
    """A card may be there: its data is being read now (the select just went out), so
    whatever else a ticket needs can be readied while the SAM answers."""

    at: float  # when the find that noticed it was answered


@dataclass(frozen=True)
class Health:
    """The reader's state changed, or is said again: `ok`, or `fault` with why."""

    state: str
    detail: str = ""


@dataclass(frozen=True)
class Note:
    """Something to log (never card data)."""

    level: int
    text: str


Output = Send | Noticed | Card | Health | Note


class SamPoller:
    def __init__(
        self,
        absent_s: float = DEFAULT_ABSENT_S,
        *,
        poll_s: float = POLL_S,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        retry_s: float = RETRY_S,
        fingerprints: Fingerprints | None = None,
    ) -> None:
        self.presence = Presence(absent_s)
        self.poll_s, self.answer_timeout_s, self.retry_s = poll_s, answer_timeout_s, retry_s
        self.dropped_frames = 0
        self.deadline: float | None = None  # when `due` must be called; None: port closed
        self._fingerprints = fingerprints or Fingerprints()
        self._decoder = sam.Decoder()
        self._asked: tuple[int, int] | None = None  # the command in flight
        self._detected_at = 0.0  # the find answer that started the current read
        self._started = False  # reset and status answered ok since the port opened
        self._unanswered = 0  # commands in a row that got no answer

    # ---- what the I/O shell reports -------------------------------------------

    def opened(self, now: float) -> list[Output]:
        """The port is open (again): reset the SAM and ask its status."""
        self._decoder = sam.Decoder()
        self._started = False
        return self._ask(sam.RESET, now)

    def closed(self) -> None:
        """The port is gone. Nothing is in flight; presence is kept (silence is not absence)."""
        self._asked, self.deadline, self._started = None, None, False

    def received(self, data: bytes, now: float) -> list[Output]:
        out: list[Output] = []
        for item in self._decoder.feed(data):
            if isinstance(item, sam.FrameError):
                self.dropped_frames += 1
                out.append(Note(logging.WARNING, f"dropped a damaged SAM frame: {item}"))
                continue
            try:
                response = sam.parse_response(item)
            except sam.FrameError as exc:
                self.dropped_frames += 1
                out.append(Note(logging.WARNING, f"dropped a SAM frame: {exc}"))
                continue
            if self._asked is None:
                out.append(Note(logging.DEBUG, "dropped a SAM answer nothing waited for"))
                continue
            out += self._answered(response, now)
        return out

    def due(self, now: float) -> list[Output]:
        """The deadline has come: an answer that did not come, or the next step."""
        if self.deadline is None or now < self.deadline:
            return []
        if self._asked is not None:
            self._decoder = sam.Decoder()  # a frame cut short is not finished by the next
            return self._answered(None, now)
        if not self._started:
            return self.opened(now)  # after a fault: start again
        return self._ask(sam.FIND_CARD, now)

    # ---- the exchange -------------------------------------------------------

    def _ask(self, command: tuple[int, int], now: float) -> list[Output]:
        self._asked = command
        self.deadline = now + self.answer_timeout_s
        return [Send(sam.command(command))]

    def _wait(self, seconds: float, now: float) -> list[Output]:
        self._asked = None
        self.deadline = now + seconds
        return []

    def _answered(self, response: sam.Response | None, now: float) -> list[Output]:
        asked, self._asked = self._asked, None
        self._unanswered = 0 if response is not None else self._unanswered + 1
        if self._started and self._unanswered >= UNANSWERED:
            self._started, self._unanswered = False, 0  # start again: reset, status
            return [Health("fault", "SAM does not answer"), *self._wait(self.retry_s, now)]
        if asked == sam.RESET:
            return self._ask(sam.STATUS, now)
        if asked == sam.STATUS:
            if response is None or not response.ok:
                detail = (
                    "SAM does not answer status"
                    if response is None
                    else f"SAM status: {response.meaning}"
                )
                return [Health("fault", detail), *self._wait(self.retry_s, now)]
            self._started = True
            return [Health("ok"), *self._ask(sam.FIND_CARD, now)]
        if asked == sam.FIND_CARD:
            return self._found(response, now)
        if asked == sam.SELECT_CARD:
            if response is None or not response.ok:
                notes = (
                    [] if response is None else [Note(logging.INFO, f"select: {response.meaning}")]
                )
                return [*notes, *self._ask(sam.FIND_CARD, now)]
            return self._ask(sam.READ_BASE, now)
        if asked == sam.READ_BASE:
            return self._read(response, now)
        return []

    def _found(self, response: sam.Response | None, now: float) -> list[Output]:
        if response is None:
            return self._wait(self.poll_s, now)
        if response.sw3 == sam.NO_CARD:
            self.presence.absent(now)
            return self._wait(self.poll_s, now)
        if response.sw3 != sam.FOUND:  # an error is no evidence either way
            return [Note(logging.DEBUG, f"find: {response.meaning}"), *self._wait(self.poll_s, now)]
        if not self.presence.present(now):
            return self._wait(self.poll_s, now)  # the same card, still there
        self._detected_at = now
        return [*self._ask(sam.SELECT_CARD, now), Noticed(now)]  # the select goes out first

    def _read(self, response: sam.Response | None, now: float) -> list[Output]:
        if response is None or not response.ok:
            notes = [] if response is None else [Note(logging.WARNING, f"read: {response.meaning}")]
            return [*notes, *self._ask(sam.FIND_CARD, now)]
        try:
            identity = sam.parse_base_message(response.data)
        except sam.FrameError as exc:
            return [
                Note(logging.WARNING, f"unreadable card text: {exc}"),
                *self._ask(sam.FIND_CARD, now),
            ]
        card = self._fingerprints.of(response.data[TEXT])
        if not self.presence.identified(card, now):
            note = Note(logging.DEBUG, "the same card, back after a dropout: not read again")
            return [note, *self._wait(self.poll_s, now)]
        return [Card(identity, self._detected_at, now), *self._wait(self.poll_s, now)]

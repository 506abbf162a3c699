"""The announcement queue: sans-I/O, time passed in.

Every call and recall is queued in arrival order and announced one at a time: `next`
hands out the head only when nothing is playing, and the player's `done` frees the
speaker. Nothing is dropped. The one thing merged is an exact duplicate — the same
event (ticket, window, call or recall, and the hall's time of it) handed in twice.

The backlog is not capped: it holds at most what the hall's windows call while earlier
announcements play (each clerk's keypad has a call lockout), a few hundred bytes each.
A burst is drained faster instead: once more than `burst` announcements wait, each one
that starts is spoken once instead of `repeats` times (the chime still plays).

`Policy` decides how each call is announced: the quietest of the hall's `mode`, the
service's own mode and, in quiet hours, `quiet_mode` ("speech" > "chime" > "silent").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo

from quhao.config.voice import MODES, Mode, Voice
from screens.voice.text import announcement

RECENT_KEYS = 1024  # exact duplicates are recognised among this many latest calls


@dataclass(frozen=True)
class Call:
    """One `ticket.called` or `ticket.recalled` event, as the announcer needs it."""

    ticket: str  # the ticket id ("2026-11-23/A001")
    number: str  # what is read out ("A001")
    window: int
    service: str  # service id ("" when the event had none)
    recall: bool
    at: float  # hall time of the call

    @property
    def key(self) -> tuple[str, int, bool, float]:
        return (self.ticket, self.window, self.recall, self.at)


@dataclass(frozen=True)
class Announcement:
    """What the player is asked to do for one call."""

    seq: int  # 1, 2, … in arrival order
    call: Call
    mode: Mode
    text: str | None  # sent to the speech engine; None unless mode is "speech"
    repeats: int  # how many times the text is spoken (set when it starts)
    queued_at: float


def _in_span(now: dtime, span: tuple[dtime, dtime]) -> bool:
    start, end = span
    if start < end:
        return start <= now < end
    return now >= start or now < end  # runs past midnight ("22:00-06:00", "20:00-24:00")


class Policy:
    """How a call is announced: pure, from the `[voice]` table, the site's time zone
    and the services' names."""

    def __init__(self, voice: Voice, timezone: ZoneInfo, service_names: dict[str, str]) -> None:
        self.voice, self.timezone, self.service_names = voice, timezone, service_names

    def quiet(self, at: float) -> bool:
        local = datetime.fromtimestamp(at, self.timezone).time()
        return any(_in_span(local, span) for span in self.voice.quiet_hours)

    def mode(self, service: str, at: float) -> Mode:
        modes = [self.voice.mode, self.voice.services.get(service, "speech")]
        if self.quiet(at):
            modes.append(self.voice.quiet_mode)
        return max(modes, key=MODES.index)  # the quietest

    def text(self, call: Call) -> str:
        template = self.voice.recall_template if call.recall else self.voice.template
        return announcement(
            template, call.number, call.window, self.service_names.get(call.service, "")
        )


class AnnouncementQueue:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.waiting: deque[Announcement] = deque()
        self.playing: Announcement | None = None
        self._seq = 0
        self._recent: deque[tuple[str, int, bool, float]] = deque()
        self._recent_keys: set[tuple[str, int, bool, float]] = set()

    def add(self, call: Call, now: float) -> Announcement | None:
        """Queue a call; None if it is an exact duplicate of a recent one."""
        if call.key in self._recent_keys:
            return None
        self._recent.append(call.key)
        self._recent_keys.add(call.key)
        if len(self._recent) > RECENT_KEYS:
            self._recent_keys.discard(self._recent.popleft())
        self._seq += 1
        mode = self.policy.mode(call.service, call.at)
        text = self.policy.text(call) if mode == "speech" else None
        item = Announcement(self._seq, call, mode, text, self.policy.voice.repeats, now)
        self.waiting.append(item)
        return item

    def next(self, now: float) -> Announcement | None:
        """The announcement to play now, or None while one plays or none waits."""
        if self.playing is not None or not self.waiting:
            return None
        item = self.waiting.popleft()
        if len(self.waiting) >= self.policy.voice.burst and item.repeats > 1:
            item = Announcement(item.seq, item.call, item.mode, item.text, 1, item.queued_at)
        self.playing = item
        return item

    def done(self, seq: int, now: float) -> bool:
        """The announcement `seq` has finished playing (or failed): the speaker is free.
        False (and nothing changes) if `seq` is not the one playing."""
        if self.playing is None or self.playing.seq != seq:
            return False
        self.playing = None
        return True

    @property
    def backlog(self) -> int:
        return len(self.waiting) + (self.playing is not None)

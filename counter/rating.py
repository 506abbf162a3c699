"""The 好差评 rating pad's meaning. Pure: key presses and time in, ratings out.

Armed when a ticket is finished at the window. Five keys, in the order of
[keys.rating] levels: 非常满意 (5), 满意 (4), 基本满意 (3), 不满意 (2), 非常不满意 (1).
A 不满意 or 非常不满意 then asks for a reason: the same keys pick one of
[texts] rating_reasons. No answer within the timeout: the ticket is recorded as
unrated (never as satisfied); a bad rating without a chosen reason is recorded
with [texts] rating_no_reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from quhao.devices.inputevent import PRESS, KeyEvent

LEVEL_NAMES = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}


@dataclass(frozen=True)
class Rating:
    ticket: str
    level: int | None  # None: unrated
    reason: str = ""


class RatingPad:
    def __init__(
        self,
        level_keys: tuple[str, ...],
        reasons: tuple[str, ...],
        no_reason: str,
        timeout_s: float,
    ) -> None:
        self.level_keys = level_keys
        self.reasons, self.no_reason = reasons, no_reason
        self.timeout_s = timeout_s
        self.ticket: str | None = None
        self.level: int | None = None  # chosen bad level waiting for a reason
        self.deadline = 0.0

    @property
    def armed(self) -> bool:
        return self.ticket is not None

    def arm(self, ticket: str, now: float) -> list[Rating]:
        """A ticket was finished here. A rating still pending for another is closed first."""
        out = self._expire() if self.ticket and self.ticket != ticket else []
        if self.ticket != ticket:
            self.ticket, self.level, self.deadline = ticket, None, now + self.timeout_s
        return out

    def press(self, event: KeyEvent, now: float) -> list[Rating]:
        if event.value != PRESS or self.ticket is None or event.key not in self.level_keys:
            return []
        index = self.level_keys.index(event.key)
        if self.level is None:
            level = 5 - index
            if level >= 3:
                return self._done(Rating(self.ticket, level))
            self.level, self.deadline = level, now + self.timeout_s
            return []
        if index < len(self.reasons):
            return self._done(Rating(self.ticket, self.level, self.reasons[index]))
        return []

    def tick(self, now: float) -> list[Rating]:
        return self._expire() if self.ticket and now >= self.deadline else []

    def _expire(self) -> list[Rating]:
        assert self.ticket is not None
        if self.level is not None:
            return self._done(Rating(self.ticket, self.level, self.no_reason))
        return self._done(Rating(self.ticket, None))

    def _done(self, rating: Rating) -> list[Rating]:
        self.ticket, self.level = None, None
        return [rating]

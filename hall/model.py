"""The queue's nouns: tickets, terminals, events, refusals. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    WAITING = "waiting"
    CALLED = "called"  # at a window, being served
    FINISHED = "finished"
    SKIPPED = "skipped"  # no-show
    VOIDED = "voided"  # never printed: the number is never called
    EXPIRED = "expired"  # still waiting when its day ended (site.day_end = "expire")


@dataclass
class Ticket:
    id: str  # "2026-11-23/A023": unique for the site's lifetime
    day: str
    number: str  # "A023": unique per day and numbering service
    origin_service: str  # the service whose numbering gave the number
    service: str  # the service it waits for now (changes on transfer)
    issued_at: float
    kiosk: str
    priority: str | None  # elderly | appointment | green
    person_key: str | None  # HMAC pseudonym from the kiosk; never published
    override_staff: str | None
    order: tuple[float, float]  # queue position: (rank time, tie-break); issue time unless moved
    status: Status = Status.WAITING
    terminal: str | None = None
    window: int | None = None
    staff: str | None = None
    first_called_at: float | None = None
    called_at: float | None = None
    finished_at: float | None = None
    recalls: int = 0
    path: list[str] = field(default_factory=list)  # services already passed (三证联办)
    rating: int | None = None
    rating_state: str = "none"  # none | rated | unrated
    rating_reason: str = ""
    wait_alerted: bool = False
    queue_day: str = ""  # the day whose queue holds it: its own, or a later one if carried
    offline: bool = False  # issued by its kiosk from a lease while the hall was unreachable
    # its rid at its kiosk: an online ticket's `issue` request; an offline ticket's own
    # (a second handover of it changes nothing)
    rid: str | None = None
    abandoned_rid: str | None = None  # offline: the `issue` its kiosk gave up on for it

    def public(self) -> dict[str, Any]:
        """What may leave the hall: everything but the person key."""
        return {
            "id": self.id,
            "number": self.number,
            "service": self.service,
            "issued_at": self.issued_at,
            "priority": self.priority,
            "status": self.status.value,
            "window": self.window,
        }


@dataclass
class LeaseBlock:
    """Numbers first…last of one service's day, reserved for one kiosk to issue offline.
    Taken from the top of the day's numbers downward; online numbering skips them, so
    nobody else ever issues them."""

    first: int
    last: int
    released: bool = False  # the kiosk gave up what it had not used

    def __contains__(self, number: int) -> bool:
        return self.first <= number <= self.last


@dataclass
class Terminal:
    """One caller position. Usually one per window; two for 一窗双岗."""

    device: str
    window: int
    open: bool = False
    staff: str | None = None
    paused: bool = False
    current: str | None = None  # ticket id being served
    since: float = 0.0
    priority_streak: int = 0

    @property
    def status(self) -> str:
        if self.current:
            return "serving"
        if self.paused:
            return "paused"
        return "idle" if self.open else "closed"


@dataclass(frozen=True)
class Event:
    """A fact the hall committed. The event log is the source of truth; state is its fold."""

    type: str
    at: float
    data: dict[str, Any]


class Refused(Exception):
    """A request the rules do not allow; becomes an error response with this code (the
    codes are the wire's: `quhao.messages.ERROR_CODES`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

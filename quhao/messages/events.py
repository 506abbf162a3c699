"""Events: one committed fact each, published on `event/{type}` in commit order (QoS 0:
notifications; what must not be missed is in the retained states and the database).

Each payload has `type`, `at` and the fact's fields. Ticket events also carry the
ticket's `number`, `service` and `window` as they are after the fact — whenever the
ticket is still in the hall's live state, which it is except for an expiry published
together with the archiving of its (long past) day. Person keys are never published.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field

from quhao.messages.base import Priority, Seconds, Wire


class Fact(Wire):
    type: str
    at: Seconds


class TicketFact(Fact):
    ticket: str = Field(description="the ticket id")
    number: str | None = None
    service: str | None = None
    window: int | None = None


class TicketIssued(TicketFact):
    """A ticket was issued at a kiosk."""

    type: Literal["ticket.issued"]
    day: str
    number: str
    service: str
    kiosk: str
    priority: Priority | None
    override_staff: str | None = Field(description="the staff id that allowed it beyond quota")
    seq: int = Field(description="issue order (ties in the queue)")
    offline: bool = Field(
        default=False, description="issued by the kiosk from its lease; `at` is when it printed"
    )
    rid: str | None = Field(
        default=None,
        description="its rid at the kiosk: the `issue` (or `checkin`) request's for an online "
        "ticket, the offline ticket's own for an offline one",
    )
    abandoned_rid: str | None = Field(
        default=None,
        description="an offline ticket's: the `issue` the kiosk gave up on before printing it",
    )
    handed_over_at: Seconds | None = Field(
        default=None, description="when the kiosk handed the offline ticket over"
    )


class TicketRefused(Fact):
    """A quota or cap refusal: the day's report counts them."""

    type: Literal["ticket.refused"]
    kiosk: str
    service: str
    reason: Literal["quota_exceeded", "daily_cap_reached"]
    day: str


class TicketCalled(TicketFact):
    """A terminal called a ticket to its window."""

    type: Literal["ticket.called"]
    terminal: str
    window: int
    staff: str | None
    ordinary_waiting: bool = Field(description="an ordinary ticket waited for this terminal")


class TicketRecalled(TicketFact):
    """The ticket being served was called again."""

    type: Literal["ticket.recalled"]
    terminal: str
    window: int


class TicketSkipped(TicketFact):
    """The citizen did not come (过号), or the recall limit was reached."""

    type: Literal["ticket.skipped"]
    terminal: str
    reason: Literal["no_show", "recall_limit"]


class TicketFinished(TicketFact):
    """Service done (also when a call finished the ticket before calling the next)."""

    type: Literal["ticket.finished"]
    terminal: str
    window: int
    staff: str | None


class TicketTransferred(TicketFact):
    """Sent on to another service (三证联办): it keeps its number and its issue time."""

    type: Literal["ticket.transferred"]
    terminal: str
    from_: str = Field(alias="from", description="the service it left")
    to: str = Field(description="the service it waits for now")


class TicketReinstated(TicketFact):
    """A skipped citizen came back and waits again."""

    type: Literal["ticket.reinstated"]
    terminal: str
    order: list[float] = Field(
        min_length=2, max_length=2, description="its new queue place: rank time, tie-break"
    )


class TicketVoided(TicketFact):
    """The kiosk could not print it, or gave its request up (its answer was lost) and
    printed an offline ticket instead, or nothing: the number is never called."""

    type: Literal["ticket.voided"]
    kiosk: str
    reason: str | None = Field(
        default=None,
        description='absent: not printed; "superseded by offline ticket A981"; '
        '"abandoned by the kiosk"',
    )
    superseded_by: str | None = Field(
        default=None, description="the id of the offline ticket printed in its stead"
    )


class TicketExpired(TicketFact):
    """Still waiting when its day ended (`site.day_end = "expire"`)."""

    type: Literal["ticket.expired"]
    reason: Literal["day_end"]


class TicketCarried(TicketFact):
    """Still waiting at midnight in a hall with `site.day_end = "carry_over"`: it
    keeps its number, issue time and priority and waits in the new day's queue."""

    type: Literal["ticket.carried"]
    to_day: str = Field(description="the day whose queue it waits in now")


class TicketRated(TicketFact):
    """好差评 for a ticket finished at a window."""

    type: Literal["ticket.rated"]
    number: str
    level: int | None = Field(description="5 非常满意 … 1 非常不满意; null: unrated")
    reason: str
    window: int | None
    staff: str | None
    service: str
    device: str | None = Field(
        default=None,
        description="who rated: counter-W{n} (the window's rating pad, 现场评价器) or "
        "rater-W{n} (its touch screen, 触摸屏)",
    )


class BadRating(TicketFact):
    """A level 1 or 2 needs follow-up: as `ticket.rated`."""

    type: Literal["alert.bad_rating"]
    number: str
    level: int
    reason: str
    window: int | None
    staff: str | None
    service: str
    device: str | None = Field(
        default=None,
        description="who rated: counter-W{n} (the window's rating pad, 现场评价器) or "
        "rater-W{n} (its touch screen, 触摸屏)",
    )


class MaxWait(TicketFact):
    """A ticket waited past its service's `max_wait_minutes` (once per ticket)."""

    type: Literal["alert.max_wait"]
    number: str
    service: str
    waited_s: int


class LeaseGranted(Fact):
    """Numbers `first`…`last` of a service's day reserved for one kiosk's offline issuing:
    online numbering goes on after them."""

    type: Literal["lease.granted"]
    kiosk: str
    day: str
    service: str
    first: int
    last: int


class LeaseReleased(Fact):
    """A kiosk gave up the unused numbers of its lease (never issued by anyone)."""

    type: Literal["lease.released"]
    kiosk: str
    day: str
    service: str
    unused: int = Field(description="numbers of the lease that no ticket carries")


class RequestAbandoned(Fact):
    """A kiosk handed over a request it gave up on and printed nothing for: a ticket
    issued for it was voided in the same commit (if it still waited), and the request is
    refused `superseded` should it come. Remembered a week after `day`; its fields stay
    in the hall (the city's feed carries the type alone)."""

    type: Literal["request.abandoned"]
    kiosk: str
    rid: str = Field(description="the `issue` (or `checkin`) request's rid at the kiosk")
    day: str = Field(description="the hall's day when it was handed over")


class QuotaBreach(TicketFact):
    """A handed-over offline ticket beyond its person's quota (seen only by the hall: the
    same person at two kiosks cut off at once). The ticket stands."""

    type: Literal["alert.quota_breach"]
    number: str
    service: str
    kiosk: str
    held: int = Field(description="tickets the person held for the service before it")


class DailyCapExceeded(TicketFact):
    """A handed-over offline ticket beyond its service's daily cap. The ticket stands."""

    type: Literal["alert.daily_cap_exceeded"]
    number: str
    service: str
    kiosk: str


class LeaseBreach(Fact):
    """A kiosk handed over a number that is not in its lease: refused (`not_leased`)."""

    type: Literal["alert.lease_breach"]
    kiosk: str
    day: str
    service: str
    number: int
    reason: str


class TerminalLogin(Fact):
    """A clerk logged in at a terminal, or a call opened it without one."""

    type: Literal["terminal.login"]
    terminal: str
    staff: str | None = Field(description="null: opened by a call without a login")


class TerminalLogout(Fact):
    """The terminal closed."""

    type: Literal["terminal.logout"]
    terminal: str


class TerminalPaused(Fact):
    """暂停服务."""

    type: Literal["terminal.paused"]
    terminal: str


class TerminalResumed(Fact):
    """Back from a pause."""

    type: Literal["terminal.resumed"]
    terminal: str


class TicketsArchived(Fact):
    """The settled tickets of days before `before` left the live state (the database
    keeps them); a request naming one is answered `unknown_ticket`."""

    type: Literal["tickets.archived"]
    before: str


EVENT_MODELS = (
    TicketIssued,
    TicketRefused,
    TicketCalled,
    TicketRecalled,
    TicketSkipped,
    TicketFinished,
    TicketTransferred,
    TicketReinstated,
    TicketVoided,
    TicketExpired,
    TicketCarried,
    TicketRated,
    BadRating,
    MaxWait,
    TerminalLogin,
    TerminalLogout,
    TerminalPaused,
    TerminalResumed,
    TicketsArchived,
    LeaseGranted,
    LeaseReleased,
    RequestAbandoned,
    QuotaBreach,
    DailyCapExceeded,
    LeaseBreach,
)
EVENTS: dict[str, type[Fact]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in EVENT_MODELS
}


def decode_event(obj: Any) -> Fact:
    """An event payload as the model its `type` names. Raises `ValueError` (pydantic's
    `ValidationError` is one) for anything else."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    model = EVENTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"not an event type: {kind!r}")
    return model.model_validate(obj)

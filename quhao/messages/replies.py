"""Replies: what the hall answers on `reply/{device}`.

Every reply is an envelope: `{"ok": true, "rid", …the action's fields}` or
`{"ok": false, "rid", "error": {"code", "message"}}`. The `message` is English, for logs
and technicians; devices choose what they show citizens from the `code`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from quhao.messages.base import (
    Priority,
    Seconds,
    TerminalStatus,
    TicketStatus,
    Wire,
)

ERROR_CODES = {
    "bad_request": "the payload is not valid JSON or misses or mistypes a field",
    "unknown_action": "no such action",
    "forbidden": "this device may not do this",
    "unknown_service": "no such service",
    "unknown_ticket": "no such ticket today",
    "unknown_staff": "no such staff id",
    "quota_exceeded": "the person already has the maximum tickets for this service",
    "daily_cap_reached": "the service issued all its numbers for today",
    "closed": "outside opening hours",
    "paused": "the terminal is paused",
    "not_logged_in": "log in first",
    "busy": "finish or skip the current ticket first",
    "no_ticket": "the terminal has no ticket",
    "bad_state": "the ticket is not in a state that allows this",
    "reason_required": "不满意/非常不满意 need a reason",
    "not_leased": "the number is not in this kiosk's lease for that day and service",
    "unavailable": "the hall could not store the change; retry with the same rid",
    "rate_limited": "this device sent more requests than any real one would; slow down",
    "unknown_case": "no such follow-up case in the hall",
    "too_early": "the booking's check-in window has not opened yet",
    "too_late": "the booking's check-in window has closed",
    "no_appointment": "no booking of this person open for check-in today",
    "superseded": "the kiosk gave this request up and printed an offline ticket instead",
}
# The same codes as a type (tests/test_wire_contract.py checks that they agree).
ErrorCode = Literal[
    "bad_request",
    "unknown_action",
    "forbidden",
    "unknown_service",
    "unknown_ticket",
    "unknown_staff",
    "quota_exceeded",
    "daily_cap_reached",
    "closed",
    "paused",
    "not_logged_in",
    "busy",
    "no_ticket",
    "bad_state",
    "reason_required",
    "not_leased",
    "unavailable",
    "rate_limited",
    "unknown_case",
    "too_early",
    "too_late",
    "no_appointment",
    "superseded",
]


# ---- what replies carry -----------------------------------------------------


class TicketView(Wire):
    """A ticket as it may leave the hall: never its person key."""

    id: str = Field(description="unique for the site's lifetime: day/number")
    number: str = Field(description="unique per day and numbering service")
    service: str = Field(description="the service it waits for now")
    issued_at: Seconds
    priority: Priority | None
    status: TicketStatus
    window: int | None


class IssuedTicket(Wire):
    id: str
    number: str
    service: str
    service_name: str
    issued_at: Seconds
    ahead: int = Field(description="tickets of the service waiting before it now")
    priority: Priority | None
    override: bool = Field(description="issued beyond the quota by a proven staff member")


class LeaseView(Wire):
    """Numbers `first`…`last` of `service` on `day`, this kiosk's alone to issue offline."""

    day: str
    service: str
    first: int
    last: int


class Superseded(Wire):
    """The online ticket the hall had issued for the `issue` an offline ticket replaced
    (its answer never reached the kiosk)."""

    id: str
    number: str
    voided: bool = Field(description="false: it had been called already, so it stands")


class HandedOver(Wire):
    rid: str = Field(description="the offline ticket's rid")
    id: str = Field(description="the ticket id in the hall")
    number: str
    placed: bool = Field(description="false: it was handed over before; nothing changed")
    superseded: Superseded | None = Field(
        default=None,
        description="placed now with an `abandoned_rid` the hall had issued a ticket for; "
        "absent otherwise",
    )


class AbandonedRequest(Wire):
    rid: str = Field(description="the given-up request's rid, as handed over")
    superseded: Superseded | None = Field(
        default=None,
        description="the ticket the hall had issued for it (voided unless called); absent: "
        "none, and the request is refused `superseded` should it come",
    )


class OfflineRefusal(Wire):
    rid: str = Field(description="the offline ticket's rid")
    code: ErrorCode
    message: str


class StaffView(Wire):
    id: str
    name: str


# ---- the envelope -----------------------------------------------------------


class Reply(Wire):
    ok: Literal[True] = True
    rid: str


class ErrorBody(Wire):
    code: ErrorCode
    message: str


class ErrorReply(Wire):
    """A refusal. `rid` is the request's, or null when it had none that could be echoed
    (and always null for `rate_limited`: the request was not looked at)."""

    ok: Literal[False] = False
    rid: str | int | None
    error: ErrorBody


# ---- each action's reply ----------------------------------------------------


class LeaseReply(Reply):
    lease: LeaseView


class HandoverReply(Reply):
    """Each offline ticket is either in the queue now (`tickets`) or refused for good
    (`refused`, with an alert): a kiosk never sends it again."""

    tickets: list[HandedOver]
    refused: list[OfflineRefusal]
    abandoned: list[AbandonedRequest]


class ReleaseReply(Reply):
    released: int = Field(description="unused numbers given up now (0: none were held)")


class IssueReply(Reply):
    ticket: IssuedTicket


class TicketReply(Reply):
    """void, skip, finish: the ticket as it is now."""

    ticket: TicketView


class CallReply(Reply):
    ticket: TicketView | None = Field(description="called now, or (changed: false) current")
    changed: bool
    finished: str | None = Field(
        default=None, description="the ticket id this call finished; absent when unchanged"
    )


class RecallReply(Reply):
    ticket: TicketView
    recalls: int | None = Field(default=None, description="absent when it was skipped instead")
    skipped: bool


class StatusReply(Reply):
    """pause, resume, logout: the terminal's status."""

    status: TerminalStatus


class LoginReply(Reply):
    staff: StaffView


class MovedReply(Reply):
    """transfer, reinstate: the ticket waiting again, and how many wait before it."""

    ticket: TicketView
    ahead: int


class RateReply(Reply):
    ticket: str = Field(description="the ticket id")
    level: int | None
    changed: bool = Field(description="false: it was rated before; that rating stands")


ACTION_REPLIES: dict[str, type[Reply]] = {
    "issue": IssueReply,
    "void": TicketReply,
    "lease": LeaseReply,
    "handover": HandoverReply,
    "release": ReleaseReply,
    "call": CallReply,
    "recall": RecallReply,
    "skip": TicketReply,
    "finish": TicketReply,
    "pause": StatusReply,
    "resume": StatusReply,
    "login": LoginReply,
    "logout": StatusReply,
    "transfer": MovedReply,
    "reinstate": MovedReply,
    "rate": RateReply,
}


def decode_reply(action: str, obj: Any) -> Reply | ErrorReply:
    """A reply to `action`: its own model when ok, `ErrorReply` otherwise. Raises
    pydantic's `ValidationError` if it is neither."""
    if isinstance(obj, dict) and obj.get("ok") is False:
        return ErrorReply.model_validate(obj)
    return ACTION_REPLIES[action].model_validate(obj)

"""Requests: what a device publishes on `hall/req/{device}/{action}`, one model per action.

Senders build the model and publish `encode(model)`; the hall decodes with
`decode_request`. Business rules that need the site (is the service known, may this
staff member override, is the hall open, quotas, rating levels) are the hall's, not the
model's: a well-formed request may still be refused with another code.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from quhao.messages.base import (
    Age,
    BadRequest,
    Day,
    PersonKey,
    Reason,
    Rid,
    Seconds,
    ServiceId,
    StaffId,
    Text,
    TicketRef,
    Wire,
    refusal,
)


class ActionRequest(Wire):
    """Every request names its logical intent with a rid. The hall refuses a request
    without one before decoding it; a sender may leave it out of the model and let its
    `HallClient` stamp one (one rid per intent, kept through every retry)."""

    action: ClassVar[str]
    role: ClassVar[Literal["kiosk", "counter", "office"]]  # office: quhao/messages/office.py

    rid: Rid | None = Field(
        default=None, description="one per intent: a repeat gets the same answer, changes nothing"
    )


class Person(Wire):
    """Who a ticket is for, as the kiosk may say it: a pseudonym and an age, never the
    ID number."""

    key: PersonKey
    age: Age | None = Field(default=None, description="whole years, 0–130; null: unknown")


class StaffProof(Wire):
    """A staff member shown to be at the device: `{"card": proof}` from a staff card read
    there, or `{"staff": id, "pin": typed}`. A staff id without a PIN is well formed and
    refused `forbidden` by the hall (it proves nothing)."""

    card: Text | None = Field(
        default=None, description='HMAC-SHA256(site secret, "staff-card:" + UID), hex'
    )
    staff: StaffId | None = Field(default=None, description="a staff id of the site, with `pin`")
    pin: Text | None = Field(default=None, description="typed on the device's keypad")

    @model_validator(mode="after")
    def _card_or_staff(self) -> StaffProof:
        if self.card is None and self.staff is None:
            raise PydanticCustomError(
                "missing_field", "a card proof or a staff id is needed", {"field": "staff"}
            )
        if self.card is not None and (self.staff is not None or self.pin is not None):
            raise PydanticCustomError("proof_mixed", "'card' goes alone; 'staff' goes with 'pin'")
        return self


class IssueRequest(ActionRequest):
    action = "issue"
    role = "kiosk"

    service: ServiceId
    person: Person | None = Field(
        default=None, description="null only for services with id_required = false"
    )
    priority: Literal["appointment", "green"] | None = Field(
        default=None, description='"green" needs a proven override in the same request'
    )
    override: StaffProof | None = Field(
        default=None, description="issue beyond the quota (and allow green)"
    )


MAX_HANDOVER = 50  # offline tickets in one `handover` request
# Given-up requests in one `handover`. A kiosk gives up at most one per citizen while the
# hall does not answer and sends the oldest first, so a long outage's backlog goes over
# in a few requests; 64 of its own rids (32 characters) leave room for tickets within a
# request's 8 KB, and each costs the hall a lookup and at most one void.
MAX_ABANDONED = 64
MAX_NUMBER = 999_999  # a ticket number's counter: number_width is at most 6


class LeaseRequest(ActionRequest):
    """A block of today's numbers of one service that this kiosk may issue on its own
    while the hall does not answer (docs/architecture.md, "Offline issuing")."""

    action = "lease"
    role = "kiosk"

    service: ServiceId


class OfflineTicket(Wire):
    """A ticket the kiosk printed from its lease while the hall did not answer."""

    rid: Rid = Field(description="the kiosk's own id of this ticket: handing it over twice is one")
    service: ServiceId
    number: int = Field(ge=1, le=MAX_NUMBER, description="the counter of its number, in the lease")
    issued_at: Seconds = Field(description="when it was printed (its day is the lease's)")
    person: Person | None = None
    priority: Literal["appointment"] | None = Field(
        default=None,
        description="elderly is the hall's to decide, from the age; appointment only with "
        "a booking of the person open for check-in when it was printed",
    )
    abandoned_rid: Rid | None = Field(
        default=None,
        description="the rid of the `issue` the kiosk gave up on before printing this "
        "instead: the hall voids a ticket it issued for it, or refuses it later",
    )


class HandoverRequest(ActionRequest):
    """Offline tickets, placed in the queue by issue time as if issued live, and the
    requests the kiosk gave up on without printing anything in their place."""

    action = "handover"
    role = "kiosk"

    tickets: list[OfflineTicket] = Field(default_factory=list, max_length=MAX_HANDOVER)
    abandoned: list[Rid] = Field(
        default_factory=list,
        max_length=MAX_ABANDONED,
        description="rids of `issue` or `checkin` requests the kiosk gave up on and printed "
        "nothing for: the hall voids a ticket it issued for one, or refuses it later",
    )


class ReleaseRequest(ActionRequest):
    """The kiosk will never issue the unused numbers of its lease for this day and
    service (it handed over every ticket it issued from it first)."""

    action = "release"
    role = "kiosk"

    day: Day
    service: ServiceId


class VoidRequest(ActionRequest):
    action = "void"
    role = "kiosk"

    ticket: TicketRef


class CallRequest(ActionRequest):
    """Absent `expect`: call whatever comes next. Present (a number, or null for none):
    call only if that is what this terminal serves now — a doubled key press is harmless."""

    action = "call"
    role = "counter"

    expect: Text | None = Field(
        default=None, description="the number the counter believes current; null: none"
    )

    @property
    def expects(self) -> bool:
        """Whether the counter said what it believes (`"expect": null` is a belief)."""
        return "expect" in self.model_fields_set


class RecallRequest(ActionRequest):
    action = "recall"
    role = "counter"


class SkipRequest(ActionRequest):
    action = "skip"
    role = "counter"


class FinishRequest(ActionRequest):
    action = "finish"
    role = "counter"


class PauseRequest(ActionRequest):
    action = "pause"
    role = "counter"


class ResumeRequest(ActionRequest):
    action = "resume"
    role = "counter"


class LoginRequest(StaffProof, ActionRequest):
    """The clerk at this terminal, proven as an override is (the proof's keys at the top)."""

    action = "login"
    role = "counter"


class LogoutRequest(ActionRequest):
    action = "logout"
    role = "counter"


class TransferRequest(ActionRequest):
    action = "transfer"
    role = "counter"

    service: ServiceId = Field(description="the service it waits for next")
    ticket: TicketRef | None = Field(
        default=None, description="the ticket being served here; null or absent: the current"
    )


class ReinstateRequest(ActionRequest):
    action = "reinstate"
    role = "counter"

    ticket: TicketRef


class RateRequest(ActionRequest):
    action = "rate"
    role = "counter"

    ticket: TicketRef
    level: int | None = Field(
        default=None,
        description="5 非常满意 … 1 非常不满意; null or absent: unrated (the pad timed out); "
        "another number is `bad_request` once the ticket may be rated",
    )
    reason: Reason | None = Field(default="", description="needed for levels 1 and 2")


ACTION_REQUESTS: dict[str, type[ActionRequest]] = {
    model.action: model
    for model in (
        IssueRequest,
        VoidRequest,
        LeaseRequest,
        HandoverRequest,
        ReleaseRequest,
        CallRequest,
        RecallRequest,
        SkipRequest,
        FinishRequest,
        PauseRequest,
        ResumeRequest,
        LoginRequest,
        LogoutRequest,
        TransferRequest,
        ReinstateRequest,
        RateRequest,
    )
}


def decode_request(action: str, obj: Any, *, rid_required: bool = True) -> ActionRequest:
    """The request `obj` (a decoded JSON object) for `action`, or `BadRequest` naming the
    field. `rid_required=False` for callers that do not key answers by rid (the engine)."""
    model = ACTION_REQUESTS.get(action)
    if model is None:
        raise KeyError(f"no action {action!r}")
    try:
        request = model.model_validate(obj)
    except ValidationError as exc:
        raise refusal(exc) from None
    if rid_required and request.rid is None:
        given = "rid" in request.model_fields_set
        raise BadRequest("field 'rid' must be str" if given else "missing field 'rid'")
    return request

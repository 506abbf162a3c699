"""Online appointments (网上预约): the office imports the online hall's bookings, a kiosk
checks a booked citizen in (docs/supervision.md, "Appointments").

A booking names its citizen by the person key only (HMAC of the ID number with the site
secret, computed by `quhao appointments import` as the kiosk computes it): the ID number
never reaches the hall, and the key never leaves it (events are published without it).

Registered into the action, reply and event tables by `quhao.messages`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quhao.messages.base import PersonKey, Seconds, ServiceId, Text, Wire
from quhao.messages.events import Fact, TicketFact
from quhao.messages.replies import IssuedTicket, Reply
from quhao.messages.requests import ActionRequest, Person

MAX_IMPORT = 20  # bookings in one `appointment_import` request (well under 8 KB)
BookingRef = Text


# ---- requests ---------------------------------------------------------------


class Booking(Wire):
    """One booking of the online hall, as the hall keeps it."""

    ref: BookingRef = Field(min_length=1, description="the online hall's booking reference")
    person_key: PersonKey = Field(description="HMAC-SHA256(site secret, ID number)")
    service: ServiceId
    start: Seconds = Field(description="the slot's start")
    end: Seconds = Field(description="the slot's end (after its start, the same day)")


class AppointmentImportRequest(ActionRequest):
    """Bookings from the online hall. A booking reference the hall knows already changes
    nothing (re-importing a file is harmless); each booking is taken or refused alone."""

    action = "appointment_import"
    role = "office"

    bookings: list[Booking] = Field(min_length=1, max_length=MAX_IMPORT)


class CheckinRequest(ActionRequest):
    """A citizen's card or typed number at a kiosk, with no service chosen: the ticket of
    their booking if one is open now (`[appointments] early_minutes`/`late_minutes`
    around the slot's start), else a refusal saying why."""

    action = "checkin"
    role = "kiosk"

    person: Person


# ---- replies ----------------------------------------------------------------


class BookingRefusal(Wire):
    ref: str
    code: str = Field(description="unknown_service, bad_request (slot), daily_cap_reached")
    message: str


class AppointmentImportReply(Reply):
    booked: list[str] = Field(description="references taken now")
    unchanged: list[str] = Field(description="references the hall knew already")
    refused: list[BookingRefusal]


class SlotView(Wire):
    start: Seconds
    end: Seconds


class CheckinReply(Reply):
    ticket: IssuedTicket = Field(description="the booked service's ticket, priority appointment")
    slot: SlotView


# ---- events -----------------------------------------------------------------


class AppointmentFact(Fact):
    ref: str = Field(description="the booking reference")
    day: str = Field(description="the slot's day")
    service: str
    start: Seconds
    end: Seconds


class AppointmentBooked(AppointmentFact):
    """A booking was imported (its person key stays in the hall: never published)."""

    type: Literal["appointment.booked"]


class AppointmentCheckedIn(AppointmentFact, TicketFact):
    """The booked citizen checked in at a kiosk and got the appointment ticket."""

    type: Literal["appointment.checked_in"]
    kiosk: str


class AppointmentNoShow(AppointmentFact):
    """The slot passed (and its check-in window closed) without a check-in."""

    type: Literal["appointment.no_show"]


class AppointmentsForgotten(Fact):
    """The day's appointments leave the hall's live state (and their person keys with
    them): the rule needs them no longer."""

    type: Literal["appointments.forgotten"]
    before: str = Field(description="appointments of days before this one")


APPOINTMENT_REQUESTS: tuple[type[ActionRequest], ...] = (AppointmentImportRequest, CheckinRequest)
APPOINTMENT_REPLIES: dict[str, type[Reply]] = {
    "appointment_import": AppointmentImportReply,
    "checkin": CheckinReply,
}
APPOINTMENT_EVENTS: tuple[type[Fact], ...] = (
    AppointmentBooked,
    AppointmentCheckedIn,
    AppointmentNoShow,
    AppointmentsForgotten,
)

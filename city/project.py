"""What a batch of feed events becomes in the city's tables: pure, no database.

- one `events` row per event (the raw record);
- `tickets`: a full row for every ticket issued in the batch (with whatever later events
  of the batch did to it), and for older tickets a `TicketChange` — only the columns the
  batch's events set, counters to add — that the writer applies with one UPDATE. The
  fold is the hall's own (`hall/engine.py` apply): the city's ticket equals the hall's
  `tickets` row, so the city's report equals the hall's;
- `ratings`, `alerts`, and `cases`: the hall's own follow-up cases (`case.opened` with
  the hall's deadline, then `case.updated` / `appealed` / `decided`: state, appeal, last
  note, who acted, when resolved);
- `appointments`: each booking, check-in and no-show with its slot's day and service.

Per event only what the tables need, in the form the writer's binary COPY hands
PostgreSQL (city/writer.py): the event's JSON text from pydantic's encoder (Rust) as
jsonb's binary form, its time as a timestamptz's (µs since 2000-01-01 UTC, an int); a
ticket id's day is parsed once per day of the batch.

A hall is trusted to be itself, not to be right: a field of the wrong type or a ticket
id without a date is not projected (the raw event is still kept, and counted).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json

from city.ingest import CityEvent
from quhao.messages.feed import EARLIEST, LATEST

PG_EPOCH = 946_684_800  # 2000-01-01 UTC: PostgreSQL's timestamps count from there
DAY_US = 86_400_000_000


def micros(at: float) -> int:
    """A Unix time (at or after 2000, as the feed's are) as PostgreSQL's binary timestamptz:
    µs since 2000-01-01 UTC, rounded as `datetime.fromtimestamp` rounds (half to even)."""
    whole = int(at)
    return (whole - PG_EPOCH) * 1_000_000 + round((at - whole) * 1e6)


def jsonb(data: dict[str, Any]) -> bytes:
    """An event's data as jsonb's binary form: a version byte and the JSON text."""
    return b"\x01" + to_json(data)


def plausible_time(at: float) -> bool:
    return EARLIEST <= at < LATEST


def ticket_day(ticket: Any) -> dt.date | None:
    """The day in a ticket id ("2026-11-23/A001"), or None if it has none."""
    if not isinstance(ticket, str) or len(ticket) < 12 or ticket[10] != "/":
        return None
    try:
        return dt.date.fromisoformat(ticket[:10])
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


INT4 = 2**31  # the integer columns' range (the binary COPY would wrap a bigger number)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not -INT4 <= value < INT4:
        return None
    return value


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass
class TicketChange:
    """What a batch did to one ticket. None: not set by the batch (nullable columns that
    a batch may set to null carry a flag)."""

    hall: str
    id: str
    day: dt.date
    status: str | None = None
    service: str | None = None
    set_window: bool = False
    window: int | None = None
    set_staff: bool = False
    staff: str | None = None
    first_called_at: float | None = None
    called_at: float | None = None
    finished_at: float | None = None
    recalls: int = 0
    transfers: int = 0
    set_rating: bool = False
    rating: int | None = None
    rating_state: str | None = None
    rating_reason: str | None = None
    issued: dict[str, Any] | None = None  # the fields, if the batch issued it

    def full_row(self) -> tuple[Any, ...]:
        """The whole ticket, for one issued in this batch."""
        issued = self.issued or {}
        return (
            self.hall,
            self.id,
            self.day,
            issued["number"],
            issued["service"],
            self.service or issued["service"],
            self.status or "waiting",
            issued["priority"],
            issued["kiosk"],
            issued["override_staff"],
            issued["at"],
            self.first_called_at,
            self.called_at,
            self.finished_at,
            self.window,
            self.staff,
            self.recalls,
            self.transfers,
            self.rating,
            self.rating_state or "none",
            self.rating_reason or "",
        )

    def change_row(self) -> tuple[Any, ...]:
        return (
            self.hall,
            self.id,
            self.day,
            self.status,
            self.service,
            self.set_window,
            self.window,
            self.set_staff,
            self.staff,
            self.first_called_at,
            self.called_at,
            self.finished_at,
            self.recalls,
            self.transfers,
            self.set_rating,
            self.rating,
            self.rating_state,
            self.rating_reason,
        )


@dataclass
class CaseChange:
    """What a batch's `case.*` events did to one follow-up case (None: not set)."""

    hall: str
    id: str
    state: str | None = None
    closed: float | None = None  # when it was first resolved
    note: str | None = None
    by: str | None = None
    appeal: str | None = None
    updated: float | None = None

    def row(self) -> tuple[Any, ...]:
        return (
            self.hall,
            self.id,
            self.state,
            self.closed,
            self.note,
            self.by,
            self.appeal,
            self.updated,
        )


@dataclass
class Projection:
    """Rows for the writer's COPYs: `events`, `new_tickets`, `ratings` and `alerts` in
    their tables' own columns (COPYed straight in), the others staged; a ticket's and a
    case's times as Unix seconds (PostgreSQL's `to_timestamp` makes a case's)."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    new_tickets: list[tuple[Any, ...]] = field(default_factory=list)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    ratings: list[tuple[Any, ...]] = field(default_factory=list)
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    case_changes: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[tuple[Any, ...]] = field(default_factory=list)
    appointments: list[tuple[Any, ...]] = field(default_factory=list)
    months: set[dt.date] = field(default_factory=set)
    unprojected: int = 0


_Y2K = dt.date(2000, 1, 1)


def _month_of(us: int, cache: dict[int, dt.date]) -> dt.date:
    """The (UTC) month of a time (`micros`); one date per day of the batch, not per event."""
    day = us // DAY_US
    month = cache.get(day)
    if month is None:
        month = cache[day] = (_Y2K + dt.timedelta(days=day)).replace(day=1)
    return month


CASE_TYPES = ("case.opened", "case.updated", "case.appealed", "case.decided")
APPOINTMENT_KINDS = {
    "appointment.booked": "booked",
    "appointment.checked_in": "checked_in",
    "appointment.no_show": "no_show",
}


def project(events: list[CityEvent]) -> Projection:
    """One pass over the batch; the only per-event work is what the tables need."""
    out = Projection()
    changes: dict[tuple[str, str], TicketChange] = {}
    case_changes: dict[tuple[str, str], CaseChange] = {}
    days: dict[str, dt.date | None] = {}  # "2026-11-23" -> date: once per day, not per event
    month_cache: dict[int, dt.date] = {}
    months = out.months
    rows = out.events
    for event in events:
        data = event.data
        kind = event.type
        ticket = data.get("ticket")
        if not isinstance(ticket, str):
            ticket = None
        at = micros(event.at)
        rows.append((event.hall, event.seq, at, event.at, kind, ticket, jsonb(data)))
        months.add(_month_of(at, month_cache))
        if kind.startswith("case."):
            _case(out, case_changes, event, data, days)
            continue
        if kind in APPOINTMENT_KINDS:
            _appointment(out, event, data, at, days)
            continue
        if ticket is None:
            if kind.startswith("ticket.") and kind != "ticket.refused":
                out.unprojected += 1
            continue
        prefix = ticket[:10]
        if prefix in days:
            day = days[prefix]
        else:
            day = days[prefix] = ticket_day(ticket)
            if day is not None:
                months.add(day.replace(day=1))  # once per day of the batch
        if day is None:
            if kind.startswith("ticket."):
                out.unprojected += 1
            continue
        key = (event.hall, ticket)
        change = changes.get(key)
        if change is None:
            change = changes[key] = TicketChange(event.hall, ticket, day)
        if not _fold(change, event, data):
            out.unprojected += 1
            continue
        if kind == "ticket.rated":
            out.ratings.append(
                (
                    event.hall,
                    event.seq,
                    ticket,
                    day,
                    at,
                    _int(data.get("level")),
                    _text(data.get("reason")) or "",
                    _text(data.get("service")),
                    _int(data.get("window")),
                    _text(data.get("staff")),
                )
            )
        elif kind.startswith("alert."):
            out.alerts.append(
                (
                    event.hall,
                    event.seq,
                    kind,
                    at,
                    day,
                    ticket,
                    _text(data.get("service")),
                    _int(data.get("window")),
                    _text(data.get("staff")),
                    _int(data.get("level")),
                    _text(data.get("reason")),
                    _float(data.get("waited_s")),
                )
            )
    for change in changes.values():
        if change.issued is not None:
            out.new_tickets.append(change.full_row())
        elif change.status or change.recalls or change.set_rating or change.set_window:
            out.changes.append(change.change_row())
    out.case_changes = [c.row() for c in case_changes.values()]
    return out


def _day(text: Any, days: dict[str, dt.date | None]) -> dt.date | None:
    """A "2026-11-23" day, parsed once per batch; None if it is not one."""
    if not isinstance(text, str):
        return None
    if text not in days:
        try:
            days[text] = dt.date.fromisoformat(text) if len(text) == 10 else None
        except ValueError:
            days[text] = None
    return days[text]


def _slot_time(value: Any) -> int | None:
    seconds = _float(value)
    if seconds is None or not plausible_time(seconds):
        return None
    return micros(seconds)


def _appointment(
    out: Projection,
    event: CityEvent,
    d: dict[str, Any],
    at: int,
    days: dict[str, dt.date | None],
) -> None:
    """A booking, check-in or no-show: its slot's day and service (no person, no
    booking reference: neither leaves the hall)."""
    day, service = _day(d.get("day"), days), _text(d.get("service"))
    if day is None or service is None:
        out.unprojected += 1
        return
    out.appointments.append(
        (
            event.hall,
            event.seq,
            APPOINTMENT_KINDS[event.type],
            day,
            service,
            _slot_time(d.get("start")),
            _slot_time(d.get("end")),
            at,
            _text(d.get("ticket")),
            _text(d.get("kiosk")),
        )
    )


def _case(
    out: Projection,
    changes: dict[tuple[str, str], CaseChange],
    event: CityEvent,
    d: dict[str, Any],
    days: dict[str, dt.date | None],
) -> None:
    """A follow-up case as the hall keeps it (hall/cases.py): opened with the hall's own
    deadline, then its state, appeal, last note and who acted."""
    case = _text(d.get("case"))
    if case is None or event.type not in CASE_TYPES:
        return  # the case alerts are in `events`; the deadline is the case's own
    if event.type == "case.opened":
        ticket = _text(d.get("ticket"))
        day = ticket_day(ticket)
        due = _float(d.get("due"))
        if ticket is None or day is None or due is None or not plausible_time(due):
            out.unprojected += 1
            return
        out.cases.append(
            (
                event.hall,
                case,
                ticket,
                day,
                event.at,
                due,
                _int(d.get("level")) or 0,
                _text(d.get("reason")) or "",
                _text(d.get("service")),
                _int(d.get("window")),
                _text(d.get("staff")),
            )
        )
        return
    change = changes.get((event.hall, case))
    if change is None:
        change = changes[(event.hall, case)] = CaseChange(event.hall, case)
    change.updated = event.at
    change.by = _text(d.get("by")) or change.by
    note = _text(d.get("note"))
    if note is not None:
        change.note = note
    if event.type == "case.updated":
        state = _text(d.get("state"))
        if state is None:
            out.unprojected += 1
            return
        change.state = state
        if state == "resolved" and change.closed is None:
            change.closed = event.at
    elif event.type == "case.appealed":
        change.appeal = "pending"
    else:
        change.appeal = _text(d.get("decision")) or change.appeal


def _fold(c: TicketChange, event: CityEvent, d: dict[str, Any]) -> bool:
    """One event into the ticket's change, as the hall's engine applies it; False if the
    event's fields are not what the hall sends (then it changes nothing)."""
    kind, at = event.type, event.at
    if kind == "ticket.issued":
        service = _text(d.get("service"))
        number = _text(d.get("number"))
        if service is None or number is None:
            return False
        c.issued = {
            "number": number,
            "service": service,
            "priority": _text(d.get("priority")),
            "kiosk": _text(d.get("kiosk")),
            "override_staff": _text(d.get("override_staff")),
            "at": at,
        }
        c.status, c.service = "waiting", service
    elif kind == "ticket.called":
        window = _int(d.get("window"))
        if window is None:
            return False
        c.status = "called"
        c.set_window, c.window = True, window
        c.set_staff, c.staff = True, _text(d.get("staff"))
        if c.first_called_at is None:  # the database keeps an earlier one (COALESCE)
            c.first_called_at = at
        c.called_at = at
    elif kind == "ticket.recalled":
        c.recalls += 1
        c.called_at = at
    elif kind == "ticket.finished":
        c.status, c.finished_at = "finished", at
    elif kind == "ticket.skipped":
        c.status = "skipped"
    elif kind == "ticket.transferred":
        to = _text(d.get("to"))
        if to is None:
            return False
        c.service, c.status = to, "waiting"
        c.set_window, c.window = True, None
        c.transfers += 1
    elif kind == "ticket.reinstated":
        c.status = "waiting"
        c.set_window, c.window = True, None
    elif kind == "ticket.voided":
        c.status = "voided"
    elif kind == "ticket.expired":
        c.status = "expired"
    elif kind == "ticket.rated":
        level = d.get("level")
        if level is not None and _int(level) is None:
            return False
        c.set_rating, c.rating = True, _int(level)
        c.rating_state = "unrated" if level is None else "rated"
        c.rating_reason = _text(d.get("reason")) or ""
    return True

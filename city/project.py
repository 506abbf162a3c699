"""What a batch of feed events becomes in the city's tables: pure, no database.

- one `events` row per event (the raw record);
- `tickets`: a full row for every ticket issued in the batch (with whatever later events
  of the batch did to it), and for older tickets a `TicketChange` — only the columns the
  batch's events set, counters to add — that the writer applies with one UPDATE. The
  fold is the hall's own (`hall/engine.py` apply): the city's ticket equals the hall's
  `tickets` row, so the city's report equals the hall's;
- `ratings`, `cases` (a bad rating's follow-up, due `followup_days` later), `alerts`.

A hall is trusted to be itself, not to be right: a field of the wrong type or a ticket
id without a date is not projected (the raw event is still kept, and counted).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from city.ingest import CityEvent

UTC = dt.UTC
EARLIEST, LATEST = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 .. 2100-01-01: a hall's clock


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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
class Projection:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    new_tickets: list[tuple[Any, ...]] = field(default_factory=list)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    ratings: list[tuple[Any, ...]] = field(default_factory=list)
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[tuple[Any, ...]] = field(default_factory=list)
    months: set[dt.date] = field(default_factory=set)
    unprojected: int = 0


def project(events: list[CityEvent], followup_days: int) -> Projection:
    out = Projection()
    changes: dict[tuple[str, str], TicketChange] = {}
    for event in events:
        at = dt.datetime.fromtimestamp(event.at, UTC)
        data = event.data
        ticket = _text(data.get("ticket"))
        day = ticket_day(ticket)
        out.events.append(
            (
                event.hall,
                event.seq,
                at,
                event.at,
                event.type,
                ticket,
                json.dumps(data, ensure_ascii=False),
            )
        )
        out.months.add(at.date().replace(day=1))
        if ticket is None or day is None:
            if event.type.startswith("ticket.") and event.type != "ticket.refused":
                out.unprojected += 1
            continue
        key = (event.hall, ticket)
        change = changes.get(key)
        if change is None:
            change = changes[key] = TicketChange(event.hall, ticket, day)
        if not _fold(change, event, data):
            out.unprojected += 1
            continue
        out.months.add(day.replace(day=1))
        if event.type == "ticket.rated":
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
        elif event.type.startswith("alert."):
            out.alerts.append(
                (
                    event.hall,
                    event.seq,
                    event.type,
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
            if event.type == "alert.bad_rating":
                out.cases.append(
                    (
                        event.hall,
                        ticket,
                        day,
                        at,
                        at + dt.timedelta(days=followup_days),
                        _int(data.get("level")) or 0,
                        _text(data.get("reason")) or "",
                        _text(data.get("service")),
                        _int(data.get("window")),
                        _text(data.get("staff")),
                    )
                )
    for change in changes.values():
        if change.issued is not None:
            out.new_tickets.append(change.full_row())
        elif change.status or change.recalls or change.set_rating or change.set_window:
            out.changes.append(change.change_row())
    return out


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

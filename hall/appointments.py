"""Online appointments (网上预约): pure, no I/O, no clock — `now` is passed in.

- `parse` reads the online hall's export (CSV or JSON) into bookings keyed by person key:
  each ID number becomes HMAC-SHA256(site secret, number) at once (quhao/personkey.py,
  as the kiosk computes it) and is never kept, printed or logged; a malformed line is
  reported by its line number and the others are taken.
- `AppointmentBook` is the hall's live state of bookings: it decides an import (a known
  reference changes nothing), which booking a person's card checks in now, and the
  no-shows, and it applies the events.

The check-in window of a slot is [start − early_minutes, start + late_minutes]
(`[appointments]`); a booking not checked in is a no-show once both its slot and that
window are over. Appointments of a day leave the live state at the first tick of the
next day (`appointments.forgotten`), and with them their person keys.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from hall.model import Event, Refused
from quhao import idnumber
from quhao.config.loops import Appointments
from quhao.messages.appointments import Booking
from quhao.personkey import person_key

MAX_PER_DAY = 5000  # bookings the hall keeps for one day: a flood cannot grow it further
MAX_REF = 64
MAX_LINES = 100_000  # lines of one import file
# Column names the online halls' exports use, mapped to ours.
COLUMNS = {
    "id_number": "id_number",
    "id": "id_number",
    "身份证号": "id_number",
    "证件号码": "id_number",
    "name": "name",
    "姓名": "name",
    "service": "service",
    "事项": "service",
    "业务": "service",
    "start": "start",
    "开始时间": "start",
    "end": "end",
    "结束时间": "end",
    "ref": "ref",
    "booking": "ref",
    "预约号": "ref",
}
REQUIRED = ("id_number", "service", "start", "end", "ref")


# ---- the import file ---------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    bookings: list[tuple[int, Booking]]  # (line, booking), in file order
    errors: list[tuple[int, str]]  # (line, what is wrong): never the ID number


def parse(
    text: str,
    secret: bytes,
    services: Iterable[str],
    tz: ZoneInfo,
    now: float,
    rules: Appointments,
    fmt: str | None = None,
) -> Parsed:
    """Bookings of an export, CSV (a header line, then one booking a line) or JSON (a list
    of objects, or {"appointments": [...]}); `fmt` "csv"/"json", or guessed."""
    fmt = fmt or ("json" if text.lstrip()[:1] in ("[", "{") else "csv")
    rows = _json_rows(text) if fmt == "json" else _csv_rows(text)
    known = set(services)
    bookings: list[tuple[int, Booking]] = []
    errors: list[tuple[int, str]] = []
    seen: dict[str, Booking] = {}
    for line, row in rows:
        if isinstance(row, str):
            errors.append((line, row))
            continue
        try:
            booking = _booking(row, secret, known, tz, now, rules)
        except ValueError as exc:
            errors.append((line, str(exc)))
            continue
        first = seen.get(booking.ref)
        if first is not None:
            if first != booking:
                errors.append((line, f"booking {booking.ref} appears before with other details"))
            continue
        seen[booking.ref] = booking
        bookings.append((line, booking))
    return Parsed(bookings, errors)


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    out: list[tuple[int, dict[str, Any] | str]] = []
    header: list[str] | None = None
    try:
        for fields in reader:
            line = reader.line_num
            if line > MAX_LINES:
                out.append((line, f"more than {MAX_LINES} lines: the rest is not read"))
                break
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [COLUMNS.get(f.strip().lower(), f.strip()) for f in fields]
                missing = [c for c in REQUIRED if c not in header]
                if missing:
                    return [(line, f"the header lacks the column(s) {', '.join(missing)}")]
                continue
            if len(fields) != len(header):
                out.append((line, f"{len(fields)} fields, the header has {len(header)}"))
                continue
            out.append((line, dict(zip(header, (f.strip() for f in fields), strict=True))))
    except csv.Error as exc:
        out.append((reader.line_num, f"not CSV: {exc}"))
    return out


def _json_rows(text: str) -> list[tuple[int, dict[str, Any] | str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return [(getattr(exc, "lineno", 1), f"not JSON: {getattr(exc, 'msg', exc)}")]
    if isinstance(data, dict):
        data = data.get("appointments")
    if not isinstance(data, list):
        return [(1, 'not a list of bookings (nor {"appointments": [...]})')]
    # A JSON export has no lines of its own: an entry is named by its place (1, 2, …),
    # which is its line in the usual one-booking-a-line export.
    out: list[tuple[int, dict[str, Any] | str]] = []
    for index, item in enumerate(data[:MAX_LINES], 1):
        if not isinstance(item, dict):
            out.append((index, "not an object"))
            continue
        out.append((index, {COLUMNS.get(str(k).lower(), str(k)): v for k, v in item.items()}))
    return out


def _booking(
    row: dict[str, Any],
    secret: bytes,
    services: set[str],
    tz: ZoneInfo,
    now: float,
    r: Appointments,
) -> Booking:
    for column in REQUIRED:
        if row.get(column) in (None, ""):
            raise ValueError(f"no {column}")
    ref = str(row["ref"]).strip()
    if not 0 < len(ref) <= MAX_REF or not ref.isprintable():
        raise ValueError(f"booking reference must be 1 to {MAX_REF} printable characters")
    number = str(row["id_number"]).strip().upper()
    try:
        if not (len(number) == 15 and number.isalnum()):  # else 外国人永久居留证 (15)
            number = idnumber.validate(number)
    except idnumber.InvalidIdNumber as exc:
        raise ValueError(f"booking {ref}: ID number: {exc}") from None
    service = str(row["service"]).strip()
    if service not in services:
        raise ValueError(f"booking {ref}: no service {service[:40]!r} in this hall")
    start, end = _time(row["start"], tz, ref, "start"), _time(row["end"], tz, ref, "end")
    key = person_key(secret, number)
    del number  # the raw number goes no further
    booking = Booking(ref=ref, person_key=key, service=service, start=start, end=end)
    problem = slot_problem(booking, tz, now, r)
    if problem:
        raise ValueError(f"booking {ref}: {problem}")
    return booking


def _time(value: Any, tz: ZoneInfo, ref: str, what: str) -> float:
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"booking {ref}: {what} is not a time like 2026-11-23 10:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)  # the hall's local time
    return moment.timestamp()


def slot_problem(b: Booking, tz: ZoneInfo, now: float, r: Appointments) -> str | None:
    """Why a slot cannot be booked (None: it can): the import and the hall both ask."""
    if b.end <= b.start:
        return "the slot ends before it starts"
    if day_of(b.start, tz) != day_of(b.end - 1e-6, tz):
        return "the slot runs past midnight"
    if b.end <= now:
        return "the slot is over"
    if b.start > now + r.max_days_ahead * 86400:
        return f"the slot is more than {r.max_days_ahead} days ahead ([appointments])"
    return None


def day_of(at: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(at, tz).date().isoformat()


# ---- the window ---------------------------------------------------------------------


def opens_at(start: float, r: Appointments) -> float:
    return start - r.early_minutes * 60


def closes_at(start: float, r: Appointments) -> float:
    return start + r.late_minutes * 60


def no_show_at(start: float, end: float, r: Appointments) -> float:
    """Once the slot is over and nobody can check in any more."""
    return max(end, closes_at(start, r))


def window_verdict(start: float, now: float, r: Appointments) -> str:
    """ "open", "too_early" or "too_late": the window includes both its edges."""
    if now < opens_at(start, r):
        return "too_early"
    if now > closes_at(start, r):
        return "too_late"
    return "open"


# ---- the hall's book ----------------------------------------------------------------


@dataclass
class Appointment:
    ref: str
    person_key: str | None  # None once forgotten
    service: str
    day: str
    start: float
    end: float
    state: str = "booked"  # booked | checked_in | no_show
    ticket: str | None = None


APPOINTMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Appointment))
APPOINTMENT_EVENTS = frozenset(
    {"appointment.booked", "appointment.checked_in", "appointment.no_show"}
    | {"appointments.forgotten"}
)


class AppointmentBook:
    """The bookings the hall holds: today's and later ones."""

    def __init__(self) -> None:
        self.bookings: dict[str, Appointment] = {}
        self._by_key: dict[str, list[str]] = {}  # derived from bookings

    # ---- deciding -------------------------------------------------------------

    def importing(
        self,
        bookings: Iterable[Booking],
        services: Mapping[str, Collection[str]],
        tz: ZoneInfo,
        now: float,
        rules: Appointments,
    ) -> tuple[dict[str, Any], list[Event]]:
        """The reply fields and `appointment.booked` events of an import request.
        `services`: service id → its priority lanes."""
        booked: list[str] = []
        unchanged: list[str] = []
        refused: list[dict[str, str]] = []
        events: list[Event] = []
        per_day: dict[str, int] = {}
        fresh: dict[str, Booking] = {}
        for b in bookings:
            known = self.bookings.get(b.ref)
            if known is not None or b.ref in fresh:
                same = (
                    fresh[b.ref] == b if b.ref in fresh else (known is not None and _same(known, b))
                )
                if same:
                    unchanged.append(b.ref)
                else:
                    refused.append(_refusal(b.ref, "bad_state", "known with other details"))
                continue
            lanes = services.get(b.service)
            if lanes is None:
                refused.append(_refusal(b.ref, "unknown_service", f"no service {b.service!r}"))
                continue
            if "appointment" not in lanes:
                refused.append(_refusal(b.ref, "forbidden", f"{b.service} has no appointment lane"))
                continue
            problem = slot_problem(b, tz, now, rules)
            if problem:
                refused.append(_refusal(b.ref, "bad_request", problem))
                continue
            day = day_of(b.start, tz)
            if day not in per_day:
                per_day[day] = sum(1 for a in self.bookings.values() if a.day == day)
            if per_day[day] >= MAX_PER_DAY:
                refused.append(
                    _refusal(b.ref, "daily_cap_reached", f"{MAX_PER_DAY} bookings on {day}")
                )
                continue
            per_day[day] += 1
            fresh[b.ref] = b
            booked.append(b.ref)
            data = {
                "ref": b.ref,
                "day": day,
                "service": b.service,
                "start": b.start,
                "end": b.end,
                "person_key": b.person_key,
            }
            events.append(Event("appointment.booked", now, data))
        return {"booked": booked, "unchanged": unchanged, "refused": refused}, events

    def open_for(
        self, key: str, service: str | None, now: float, day: str, rules: Appointments
    ) -> Appointment:
        """The booking this person checks in now (of `service`, or any), or Refused with
        `too_early`, `too_late` or `no_appointment`."""
        mine = [
            a
            for ref in self._by_key.get(key, ())
            if (a := self.bookings[ref]).day == day
            and a.state != "checked_in"
            and (service is None or a.service == service)
        ]
        verdicts = sorted(
            ((window_verdict(a.start, now, rules), a.start, a.ref) for a in mine),
        )
        for verdict, _start, ref in verdicts:
            if verdict == "open" and self.bookings[ref].state == "booked":
                return self.bookings[ref]
        early = [v for v in verdicts if v[0] == "too_early"]
        if early:
            raise Refused("too_early", f"check-in opens {rules.early_minutes} min before the slot")
        if any(v[0] == "too_late" for v in verdicts):
            raise Refused("too_late", f"check-in closed {rules.late_minutes} min after the start")
        raise Refused("no_appointment", "no booking of this person today")

    def checked_in(self, a: Appointment, ticket: str, kiosk: str, now: float) -> Event:
        return Event("appointment.checked_in", now, {**_fact(a), "ticket": ticket, "kiosk": kiosk})

    def ticking(self, now: float, today: str, rules: Appointments) -> list[Event]:
        """No-shows whose time has come; the first tick of a day forgets the days before."""
        events = [
            Event("appointment.no_show", now, _fact(a))
            for a in self.bookings.values()
            if a.state == "booked" and now >= no_show_at(a.start, a.end, rules)
        ]
        if any(a.day < today for a in self.bookings.values()):
            events.append(Event("appointments.forgotten", now, {"before": today}))
        return events

    # ---- applying -------------------------------------------------------------

    def apply(self, event: Event) -> None:
        d = event.data
        if event.type == "appointment.booked":
            a = Appointment(
                d["ref"], d.get("person_key"), d["service"], d["day"], d["start"], d["end"]
            )
            self.bookings[a.ref] = a
            if a.person_key:
                self._by_key.setdefault(a.person_key, []).append(a.ref)
        elif event.type == "appointments.forgotten":
            for a in [a for a in self.bookings.values() if a.day < d["before"]]:
                del self.bookings[a.ref]
                self._unindex(a)
        elif (known := self.bookings.get(d.get("ref", ""))) is not None:
            if event.type == "appointment.checked_in":
                known.state, known.ticket = "checked_in", d["ticket"]
            elif event.type == "appointment.no_show":
                known.state = "no_show"

    def _unindex(self, a: Appointment) -> None:
        refs = self._by_key.get(a.person_key or "")
        if refs and a.ref in refs:
            refs.remove(a.ref)
            if not refs:
                del self._by_key[a.person_key or ""]

    # ---- snapshots ------------------------------------------------------------

    def rows(self) -> list[list[Any]]:
        return [[getattr(a, f) for f in APPOINTMENT_FIELDS] for a in self.bookings.values()]

    @classmethod
    def from_rows(cls, fields: list[str], rows: list[list[Any]]) -> AppointmentBook:
        if list(fields) != list(APPOINTMENT_FIELDS):
            raise ValueError(f"appointment fields {fields} are not today's")
        book = cls()
        for row in rows:
            a = Appointment(*row)
            book.bookings[a.ref] = a
            if a.person_key:
                book._by_key.setdefault(a.person_key, []).append(a.ref)
        return book


def forget_snapshot_keys(rows: list[list[Any]], before_day: str) -> list[list[Any]]:
    """Snapshot rows without the person keys of days before `before_day`."""
    k, d = APPOINTMENT_FIELDS.index("person_key"), APPOINTMENT_FIELDS.index("day")
    return [[*r[:k], None, *r[k + 1 :]] if r[d] < before_day else r for r in rows]


def _same(a: Appointment, b: Booking) -> bool:
    return (a.service, a.start, a.end) == (b.service, b.start, b.end) and (
        a.person_key in (None, b.person_key)
    )


def _refusal(ref: str, code: str, message: str) -> dict[str, str]:
    return {"ref": ref, "code": code, "message": message}


def _fact(a: Appointment) -> dict[str, Any]:
    return {"ref": a.ref, "day": a.day, "service": a.service, "start": a.start, "end": a.end}

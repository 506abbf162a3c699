"""Bad-rating follow-up cases (好差评 整改): pure, no I/O, no clock — `now` is passed in.

Every 不满意 (2) or 非常不满意 (1) opens a case (`case.opened`, in the same batch as the
rating). A case is due at the end of the Nth working day after the rating's day
(`[cases] deadline_working_days`; weekends and `holidays` are not working days, the
`workdays` of 调休 are). Its states and who may move it:

    open ──contacted──► contacted ──contacted (another call)──► contacted
                              └────resolved──► resolved

each change by a proven staff member with a note (`case.updated`). The clerk who was
rated may appeal once (`case.appealed`); a supervisor (`[cases] supervisors`, never the
clerk) upholds or rejects it (`case.decided`). An upheld appeal takes the rating out of
the clerk's score; the rating and its case stay on record.

The hall's tick raises `alert.case_due` once, `remind_before_hours` before the deadline,
and `alert.case_overdue` once the deadline passes, for a case not yet resolved.

Case events carry the rated ticket's `day` (and `case.opened` its `ticket`), so the
store's day index finds a period's cases with its tickets. Settled cases leave the live
state with the daily archiving, `keep_days` after they opened.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hall.model import Event, Refused
from quhao.config.loops import Cases

STATES = ("open", "contacted", "resolved")
# The allowed changes: from a state, the states `case_update` may set.
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"contacted"}),
    "contacted": frozenset({"contacted", "resolved"}),
    "resolved": frozenset(),
}
APPEALS = ("none", "pending", "upheld", "rejected")
BAD_LEVELS = (1, 2)
MAX_NOTE = 500


def is_working_day(day: date, rules: Cases) -> bool:
    if day in rules.workdays:
        return True
    return day.weekday() < 5 and day not in rules.holidays


def deadline_day(rated: date, rules: Cases) -> date:
    """The Nth working day after the rating's day (the rating's own day never counts)."""
    day, left = rated, rules.deadline_working_days
    while left:
        day += timedelta(days=1)
        if is_working_day(day, rules):
            left -= 1
    return day


def due_at(rated_at: float, tz: ZoneInfo, rules: Cases) -> float:
    """The deadline: midnight at the end of the deadline day, in the site's time zone."""
    rated = datetime.fromtimestamp(rated_at, tz).date()
    end = deadline_day(rated, rules) + timedelta(days=1)
    return datetime.combine(end, datetime.min.time(), tz).timestamp()


def case_id(ticket_id: str) -> str:
    """ "2026-11-23/A001" → "C20261123-A001": one case per rated ticket (一次一评)."""
    day, _, number = ticket_id.partition("/")
    return f"C{day.replace('-', '')}-{number}"


@dataclass
class Case:
    id: str
    ticket: str
    day: str
    number: str
    service: str
    window: int | None
    staff: str | None
    level: int
    reason: str
    opened_at: float
    due_at: float
    remind_at: float
    state: str = "open"
    contacted_at: float | None = None
    resolved_at: float | None = None
    by: str | None = None  # who changed it last
    appeal: str = "none"  # none | pending | upheld | rejected
    reminded: bool = False
    overdue: bool = False

    @property
    def settled(self) -> bool:
        return self.state == "resolved" and self.appeal != "pending"


CASE_FIELDS = tuple(f.name for f in dataclasses.fields(Case))


class CaseBook:
    """The cases the hall still watches, keyed by case id."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}

    # ---- deciding -------------------------------------------------------------

    def opening(self, rated: dict[str, Any], now: float, tz: ZoneInfo, rules: Cases) -> Event:
        """`case.opened` for a `ticket.rated` fact of level 1 or 2."""
        due = due_at(now, tz, rules)
        ticket = rated["ticket"]
        return Event(
            "case.opened",
            now,
            {
                "case": case_id(ticket),
                "ticket": ticket,
                "day": ticket.partition("/")[0],
                "number": rated["number"],
                "service": rated["service"],
                "window": rated["window"],
                "staff": rated["staff"],
                "level": rated["level"],
                "reason": rated["reason"],
                "due": due,
                "remind_at": due - rules.remind_before_hours * 3600,
            },
        )

    def update(self, ref: str, state: str, staff: str, note: str, now: float) -> list[Event]:
        case = self.find(ref)
        if state not in TRANSITIONS[case.state]:
            allowed = ", ".join(sorted(TRANSITIONS[case.state])) or "nothing (resolved)"
            raise Refused("bad_state", f"case {case.id} is {case.state}: it may become {allowed}")
        return [self._event("case.updated", case, now, state=state, by=staff, note=note)]

    def appeal(self, ref: str, staff: str, note: str, now: float) -> list[Event]:
        case = self.find(ref)
        if case.staff != staff:
            raise Refused("forbidden", f"only the rated clerk ({case.staff}) may appeal")
        if case.appeal != "none":
            raise Refused("bad_state", f"case {case.id} was appealed already ({case.appeal})")
        return [self._event("case.appealed", case, now, by=staff, note=note)]

    def decide(
        self, ref: str, decision: str, staff: str, note: str, now: float, rules: Cases
    ) -> list[Event]:
        case = self.find(ref)
        if staff not in rules.supervisors or staff == case.staff:
            raise Refused("forbidden", f"staff {staff} may not decide appeals on this case")
        if case.appeal != "pending":
            raise Refused("bad_state", f"case {case.id} has no pending appeal ({case.appeal})")
        return [self._event("case.decided", case, now, decision=decision, by=staff, note=note)]

    def alerts(self, now: float) -> list[Event]:
        """Reminders before the deadline and overdue alerts after it, once each."""
        events: list[Event] = []
        for case in self.cases.values():
            if case.state == "resolved":
                continue
            if now >= case.due_at and not case.overdue:
                events.append(self._event("alert.case_overdue", case, now, due=case.due_at))
            elif now >= case.remind_at and not case.reminded and now < case.due_at:
                events.append(self._event("alert.case_due", case, now, due=case.due_at))
        return events

    def find(self, ref: str) -> Case:
        case = self.cases.get(ref) or self.cases.get(case_id(ref))
        if case is None:
            raise Refused("unknown_case", f"no open case {ref[:40]!r} in the hall")
        return case

    @staticmethod
    def _event(kind: str, case: Case, now: float, **fields: Any) -> Event:
        return Event(
            kind,
            now,
            {
                "case": case.id,
                "day": case.day,
                "number": case.number,
                "service": case.service,
                "window": case.window,
                "staff": case.staff,
                **fields,
            },
        )

    # ---- applying -------------------------------------------------------------

    def apply(self, event: Event) -> None:
        d, at = event.data, event.at
        if event.type == "case.opened":
            self.cases[d["case"]] = Case(
                id=d["case"],
                ticket=d["ticket"],
                day=d["day"],
                number=d["number"],
                service=d["service"],
                window=d["window"],
                staff=d["staff"],
                level=d["level"],
                reason=d["reason"],
                opened_at=at,
                due_at=d["due"],
                remind_at=d["remind_at"],
            )
            return
        case = self.cases.get(d.get("case", ""))
        if case is None:
            return
        if event.type == "case.updated":
            case.state, case.by = d["state"], d["by"]
            if d["state"] == "contacted" and case.contacted_at is None:
                case.contacted_at = at
            if d["state"] == "resolved":
                case.resolved_at = at
        elif event.type == "case.appealed":
            case.appeal, case.by = "pending", d["by"]
        elif event.type == "case.decided":
            case.appeal, case.by = d["decision"], d["by"]
        elif event.type == "alert.case_due":
            case.reminded = True
        elif event.type == "alert.case_overdue":
            case.overdue = True

    def archive(self, at: float, keep_days: int) -> None:
        """With the daily archiving: settled cases opened more than keep_days ago go."""
        for case in [c for c in self.cases.values() if c.settled]:
            if at - case.opened_at > keep_days * 86400:
                del self.cases[case.id]

    # ---- snapshots ------------------------------------------------------------

    def rows(self) -> list[list[Any]]:
        return [[getattr(c, f) for f in CASE_FIELDS] for c in self.cases.values()]

    @classmethod
    def from_rows(cls, fields: list[str], rows: list[list[Any]]) -> CaseBook:
        if list(fields) != list(CASE_FIELDS):
            raise ValueError(f"case fields {fields} are not today's {list(CASE_FIELDS)}")
        book = cls()
        book.cases = {row[0]: Case(*row) for row in rows}
        return book


CASE_EVENTS = frozenset(
    {"case.opened", "case.updated", "case.appealed", "case.decided"}
    | {"alert.case_due", "alert.case_overdue"}
)

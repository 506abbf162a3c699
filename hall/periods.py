"""Period reports (a day, an ISO week, a month or any range of days) and the automatic
performance score (电子监察), from the hall's database; docs/supervision.md, "Period
reports and scores", has the formulas.

`read` takes what a period needs from the database, read-only, through its indexes: the
period's tickets (`tickets.day`), and in one range scan of the event day index its
follow-up cases (folded by hall/caselog.py), the tickets that raised `alert.max_wait`,
and the appointments checked in or not (`appointment.checked_in`, `appointment.no_show`).
`compute` is pure: those rows, the site's services and the `[scoring]` weights in,
figures per hall, department, service, window and clerk (and per day and ISO week, for
the charts) out. No person key is read.

Every figure of a ticket counts for the groups of its final service, that service's
department, and the window and clerk that served it (as the `tickets` table records
them); a case counts for the service, window and clerk of the rating it follows up.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from hall import caselog
from hall.caselog import CaseRecord
from hall.cases import CASE_EVENTS
from hall.store import EVENT_DAY
from quhao.config import SiteConfig
from quhao.config.loops import Scoring

LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
GOOD_LEVELS = (5, 4)
BAD_LEVELS = (2, 1)
# The groups of the report, broadest first: (key, title).
KINDS = (
    ("hall", "全厅 Hall"),
    ("department", "部门 Departments"),
    ("service", "事项 Services"),
    ("window", "窗口 Windows"),
    ("clerk", "工作人员 Clerks"),
)
NO_DEPARTMENT = "—"
MAX_DAYS = 366  # a period is at most a year: a typo in a year does not read ten


# ---- the period ---------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    first: date
    last: date
    label: str  # "2026-11", "2026-W47", "2026-11-23" or "2026-11-01…2026-11-15"

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def parse_period(
    day: str | None = None,
    week: str | None = None,
    month: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> Period:
    """Exactly one of a day (2026-11-23), an ISO week (2026-W47), a month (2026-11) or a
    range (--from 2026-11-01 --to 2026-11-15, both days included). ValueError says why not."""
    given = [name for name, v in (("--day", day), ("--week", week), ("--month", month)) if v]
    if start or end:
        given.append("--from/--to")
    if len(given) != 1:
        raise ValueError("give one of --day, --week, --month or --from with --to")
    if day:
        one = _date(day, "--day")
        return Period(one, one, one.isoformat())
    if week:
        found = re.fullmatch(r"(\d{4})-?W(\d{2})", week.strip())
        if not found:
            raise ValueError(f"--week {week!r}: expected an ISO week like 2026-W47")
        try:
            monday = date.fromisocalendar(int(found[1]), int(found[2]), 1)
        except ValueError:
            raise ValueError(f"--week {week!r}: no such ISO week") from None
        return Period(monday, monday + timedelta(days=6), f"{found[1]}-W{found[2]}")
    if month:
        found = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
        if not found or not 1 <= int(found[2]) <= 12:
            raise ValueError(f"--month {month!r}: expected a month like 2026-11")
        year, number = int(found[1]), int(found[2])
        days = calendar.monthrange(year, number)[1]
        return Period(date(year, number, 1), date(year, number, days), f"{year}-{number:02d}")
    if not (start and end):
        raise ValueError("--from and --to go together")
    first, last = _date(start, "--from"), _date(end, "--to")
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    if (last - first).days >= MAX_DAYS:
        raise ValueError(f"a period is at most {MAX_DAYS} days")
    label = first.isoformat() if first == last else f"{first}…{last}"
    return Period(first, last, label)


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected a day like 2026-11-23") from None


# ---- what is read -------------------------------------------------------------


class TicketRow(NamedTuple):
    id: str
    day: str
    origin_service: str
    service: str
    status: str
    issued_at: float
    first_called_at: float | None
    called_at: float | None
    finished_at: float | None
    window: int | None
    staff: str | None
    rating: int | None
    rating_state: str


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    department: str
    max_wait_s: float
    expected_s: float


@dataclass(frozen=True)
class Rows:
    """A period's rows from the hall's database."""

    tickets: list[TicketRow]
    cases: dict[str, CaseRecord]
    max_wait_alerts: list[str]  # ticket ids, one per alert.max_wait
    appointments: list[tuple[float, str, dict[str, Any]]]  # (at, type, data), in log order


def read(db: sqlite3.Connection, period: Period) -> Rows:
    first, last = period.first.isoformat(), period.last.isoformat()
    tickets = [
        TicketRow._make(r)
        for r in db.execute(
            f"SELECT {', '.join(TicketRow._fields)} FROM tickets "
            "WHERE day >= ? AND day <= ? ORDER BY day, issued_at",
            (first, last),
        )
    ]
    # the cases, the max-wait alerts and the appointments in one range scan of the day
    # index: case events carry the rated ticket's day, alerts and check-ins the ticket,
    # no-shows the slot's day
    kinds = sorted(CASE_EVENTS | {"alert.max_wait", *APPOINTMENT_EVENTS})
    case_events: list[tuple[float, str, dict[str, Any]]] = []
    appointments: list[tuple[float, str, dict[str, Any]]] = []
    alerts: list[str] = []
    for at, kind, data in db.execute(
        "SELECT at, type, CASE WHEN type = 'alert.max_wait' "
        "THEN json_extract(data, '$.ticket') ELSE data END "
        f"FROM events WHERE {EVENT_DAY} >= ? AND {EVENT_DAY} < ? "
        f"AND type IN ({', '.join('?' for _ in kinds)}) ORDER BY seq",
        (first, last + "0", *kinds),  # "…/A001" sorts below "0": the whole last day
    ):
        if kind == "alert.max_wait":
            alerts.append(data)
        elif kind in APPOINTMENT_EVENTS:
            appointments.append((at, kind, json.loads(data)))
        else:
            case_events.append((at, kind, json.loads(data)))
    return Rows(tickets, caselog.fold(case_events), alerts, appointments)


def services_of(config: SiteConfig) -> dict[str, ServiceInfo]:
    return {
        s.id: ServiceInfo(s.name, s.department, s.max_wait_s, s.expected_service_s)
        for s in config.services.values()
    }


# ---- figures ------------------------------------------------------------------


@dataclass
class Group:
    """The figures of one hall, department, service, window, clerk, day or week."""

    key: str
    name: str
    tickets: int = 0
    served: int = 0
    no_shows: int = 0
    voided: int = 0
    expired: int = 0
    waits: list[float] = field(default_factory=list)  # issue → first call, s
    within_wait: int = 0  # of those, within the service's max wait
    service_times: list[float] = field(default_factory=list)  # call → finish, s
    within_expected: int = 0  # of those, within the service's expected minutes
    levels: dict[int, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    excluded: int = 0  # ratings taken out by an upheld appeal (on record, not counted)
    cases: int = 0
    on_time: int = 0
    late: int = 0
    overdue: int = 0
    open: int = 0
    appealed: int = 0
    upheld: int = 0
    followup_on_time: int = 0  # cases without an upheld appeal: resolved on time …
    followup_judged: int = 0  # … of those resolved or overdue
    max_wait_alerts: int = 0
    checkins: int = 0
    appointment_no_shows: int = 0
    _sorted: list[float] = field(default_factory=list, repr=False, compare=False)

    def add(self, other: Group) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.waits += other.waits
        self.service_times += other.service_times
        for level, n in other.levels.items():
            self.levels[level] += n

    def wait(self, q: float) -> float | None:
        """The q-th percentile of the waits (`percentile`), sorted once per group."""
        if len(self._sorted) != len(self.waits):
            self._sorted = sorted(self.waits)
        return nearest_rank(self._sorted, q)

    @property
    def rated(self) -> int:
        return sum(self.levels.values())

    @property
    def counted(self) -> int:
        """The ratings the satisfaction rate counts: all but those an appeal took out."""
        return self.rated - self.excluded

    @property
    def bad(self) -> int:
        return sum(self.levels[n] for n in BAD_LEVELS)

    @property
    def good(self) -> int:
        return sum(self.levels[n] for n in GOOD_LEVELS)

    @property
    def satisfaction(self) -> float | None:
        """(非常满意 + 满意) / (all ratings − ratings taken out by upheld appeals)."""
        return self.good / self.counted if self.counted else None

    def parts(self) -> dict[str, float | None]:
        """Part scores 0–100, None where the group has nothing to judge."""
        return {
            "satisfaction": _share(self.good, self.counted),
            "followup": _share(self.followup_on_time, self.followup_judged),
            "wait": _share(self.within_wait, len(self.waits)),
            "speed": _share(self.within_expected, len(self.service_times)),
        }

    def score(self, weights: dict[str, float]) -> float | None:
        """The weighted mean of the parts there are (the others' weights are left out)."""
        parts = self.parts()
        total = sum(w for name, w in weights.items() if parts.get(name) is not None)
        if not total:
            return None
        return sum(w * (parts[name] or 0.0) for name, w in weights.items()) / total


COUNTS = tuple(
    f.name
    for f in fields(Group)
    if f.type == "int"  # postponed annotations: strings
)


def _share(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q % of the values at or below it."""
    return nearest_rank(sorted(values), q)


def nearest_rank(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class PeriodReport:
    period: Period
    site: str
    groups: dict[str, dict[str, Group]]  # kind (KINDS) → key → figures
    days: dict[str, Group]  # "2026-11-23" → figures of tickets of that day
    weeks: dict[str, Group]  # "2026-W47" → figures of tickets of that week
    weights: dict[str, float]
    services: dict[str, ServiceInfo]
    appointments_seen: bool  # any appointment event in the period (else "—")

    @property
    def hall(self) -> Group:
        return self.groups["hall"]["hall"]


Cell = tuple[str | None, int | None, str | None, str]  # service, window, staff, day


def compute(
    period: Period,
    rows: Rows,
    services: dict[str, ServiceInfo],
    staff_names: dict[str, str] | None = None,
    scoring: Scoring | None = None,
    site: str = "",
    tz: ZoneInfo | None = None,
) -> PeriodReport:
    """Figures are first added up per cell (service, window, clerk, day) — a month of a
    large hall has a few thousand — and each cell then once into its groups."""
    tz = tz or ZoneInfo("Asia/Shanghai")
    cells: dict[Cell, Group] = {}

    def cell(key: Cell) -> Group:
        found = cells.get(key)
        if found is None:
            found = cells[key] = Group("", "")
        return found

    def info(service: str) -> ServiceInfo:
        known = services.get(service)
        return known or ServiceInfo(service, "", 3600.0, 480.0)  # the site file's defaults

    upheld = {c.ticket for c in rows.cases.values() if c.upheld}
    by_id: dict[str, Cell] = {}
    max_wait = {t.origin_service: info(t.origin_service).max_wait_s for t in rows.tickets}
    expected = {t.service: info(t.service).expected_s for t in rows.tickets}
    for t in rows.tickets:
        key = by_id[t.id] = (t.service, t.window, t.staff, t.day)
        g = cells.get(key) or cell(key)
        g.tickets += 1
        if t.status == "finished":
            g.served += 1
            if t.called_at is not None and t.finished_at is not None:
                took = t.finished_at - t.called_at
                g.service_times.append(took)
                g.within_expected += took <= expected[t.service]
        elif t.status == "skipped":
            g.no_shows += 1
        elif t.status == "voided":
            g.voided += 1
        elif t.status == "expired":
            g.expired += 1
        if t.first_called_at is not None:
            wait = t.first_called_at - t.issued_at
            g.waits.append(wait)
            g.within_wait += wait <= max_wait[t.origin_service]  # what was queued for
        if t.rating_state == "rated" and t.rating in LEVELS:
            g.levels[t.rating] += 1
            g.excluded += t.id in upheld
    for case in rows.cases.values():
        state = case.followup(float("-inf"))  # as the log records it: no wall clock
        g = cell((case.service, case.window, case.staff, case.day))
        g.cases += 1
        if state == "on_time":
            g.on_time += 1
        elif state == "late":
            g.late += 1
        elif state == "overdue":
            g.overdue += 1
        else:
            g.open += 1
        g.appealed += case.appeal != "none"
        g.upheld += case.upheld
        if not case.upheld and state != "open":
            g.followup_judged += 1
            g.followup_on_time += state == "on_time"
    for ticket in rows.max_wait_alerts:
        if ticket in by_id:
            cell(by_id[ticket]).max_wait_alerts += 1
    for at, kind, data in rows.appointments:
        what = appointment_kind(kind)
        if what is None:
            continue
        booked = by_id.get(str(data.get("ticket", "")))
        day = _text(data.get("day")) or datetime.fromtimestamp(at, tz).date().isoformat()
        g = cell(booked or (_text(data.get("service")), None, None, day))
        if what == "checkin":
            g.checkins += 1
        else:
            g.appointment_no_shows += 1

    names = staff_names or {}
    groups: dict[str, dict[str, Group]] = {kind: {} for kind, _ in KINDS}
    groups["hall"]["hall"] = Group("hall", site or "全厅")
    days = {d.isoformat(): Group(d.isoformat(), d.isoformat()) for d in period.days}
    weeks: dict[str, Group] = {}
    for d in period.days:
        weeks.setdefault(_week(d.isoformat()), Group(_week(d.isoformat()), _week(d.isoformat())))
    for (service, window, staff, day), figures in cells.items():
        targets = [groups["hall"]["hall"]]
        if service is not None:
            known = info(service)
            department = known.department or NO_DEPARTMENT
            targets.append(_get(groups["department"], department, department))
            targets.append(_get(groups["service"], service, known.name))
        if window is not None:
            targets.append(_get(groups["window"], str(window), f"{window}号窗口"))
        if staff:
            name = names.get(staff)
            targets.append(_get(groups["clerk"], staff, f"{name} {staff}" if name else staff))
        if day in days:
            targets += [days[day], weeks[_week(day)]]
        for target in targets:
            target.add(figures)
    weights = (scoring or Scoring()).weights
    return PeriodReport(
        period, site, groups, days, weeks, weights, services, bool(rows.appointments)
    )


# An appointment checked in (its ticket) or not by the end of its slot (its slot's day).
APPOINTMENT_EVENTS = {"appointment.checked_in": "checkin", "appointment.no_show": "no_show"}


def appointment_kind(event_type: str) -> str | None:
    return APPOINTMENT_EVENTS.get(event_type)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _get(table: dict[str, Group], key: str, name: str) -> Group:
    group = table.get(key)
    if group is None:
        group = table[key] = Group(key, name)
    return group


def _week(day: str) -> str:
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def period_report(db_path: Path, period: Period, config: SiteConfig) -> PeriodReport:
    """Read and compute: the whole report of a period of a hall's database."""
    tz = config.site.timezone
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = read(db, period)
    finally:
        db.close()
    staff = {m.id: m.name for m in config.staff.values()}
    return compute(period, rows, services_of(config), staff, config.scoring, config.site.name, tz)


def ordered(groups: Iterable[Group]) -> list[Group]:
    """Windows by number, everything else by key."""
    return sorted(groups, key=lambda g: (0, int(g.key), "") if g.key.isdigit() else (1, 0, g.key))

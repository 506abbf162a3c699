"""The city's report for a period (`quhao report --city --config city.toml --from --to`).

Per hall and department (and per hall and service, the hall report's own grouping):
tickets issued, served, no-shows, voided; waits before the first call p50/p90 (the
hall report's percentile: the value at index ⌊q·n⌋ of the sorted waits); satisfaction
rate (非常满意 + 满意 over rated tickets), the five levels and the unrated; quota
refusals; bad ratings and their follow-up cases (closed on time, closed late, open
within time, overdue); and a score where the hall has ratings: the mean level × 20
(0–100). Computed in PostgreSQL, over the month partitions the period touches.

Per hall, day and service, the online appointments (网上预约) of the period's days:
bookings, check-ins and no-shows (the `appointments` table: no person, no booking
reference).

Written as HTML (the city page: a static, read-only file in the hall report's style,
one table per grouping, nothing to log in to) and CSV (`departments.csv`,
`services.csv`, `halls.csv`, `appointments.csv`).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}

_GROUPS = {
    "halls": "''",
    "departments": "COALESCE(NULLIF(s.department, ''), t.service)",
    "services": "t.service",
}

# One query per grouping: {key} is the grouping expression above.
_FIGURES = """
WITH t AS (
    SELECT t.hall, {key} AS key, t.status, t.issued_at, t.first_called_at, t.rating,
           t.rating_state
    FROM tickets t LEFT JOIN services s ON s.hall = t.hall AND s.id = t.service
    WHERE t.day BETWEEN %(start)s AND %(end)s
),
counts AS (
    SELECT hall, key,
        count(*) AS issued,
        count(*) FILTER (WHERE status = 'finished') AS served,
        count(*) FILTER (WHERE status = 'skipped') AS no_shows,
        count(*) FILTER (WHERE status = 'voided') AS voided,
        count(*) FILTER (WHERE rating_state = 'rated' AND rating = 5) AS level_5,
        count(*) FILTER (WHERE rating_state = 'rated' AND rating = 4) AS level_4,
        count(*) FILTER (WHERE rating_state = 'rated' AND rating = 3) AS level_3,
        count(*) FILTER (WHERE rating_state = 'rated' AND rating = 2) AS level_2,
        count(*) FILTER (WHERE rating_state = 'rated' AND rating = 1) AS level_1,
        count(*) FILTER (WHERE status = 'finished'
                         AND NOT (rating_state = 'rated' AND rating BETWEEN 1 AND 5)) AS unrated,
        avg(rating) FILTER (WHERE rating_state = 'rated' AND rating BETWEEN 1 AND 5) AS mean
    FROM t GROUP BY hall, key
),
waits AS (
    SELECT hall, key, first_called_at - issued_at AS wait,
        row_number() OVER (PARTITION BY hall, key ORDER BY first_called_at - issued_at) - 1
            AS i,
        count(*) OVER (PARTITION BY hall, key) AS n
    FROM t WHERE first_called_at IS NOT NULL
),
pct AS (
    SELECT hall, key,
        max(wait) FILTER (WHERE i = least(n - 1, floor(0.5::float8 * n))) AS p50,
        max(wait) FILTER (WHERE i = least(n - 1, floor(0.9::float8 * n))) AS p90,
        max(wait) AS wait_max
    FROM waits GROUP BY hall, key
),
refused AS (
    SELECT e.hall, {refused_key} AS key, count(*) AS refusals
    FROM events e LEFT JOIN services s ON s.hall = e.hall AND s.id = e.data->>'service'
    WHERE e.type = 'ticket.refused'
      AND e.at >= %(start_at)s AND e.at < %(end_at)s
      AND (e.data->>'day') BETWEEN %(start_text)s AND %(end_text)s
    GROUP BY 1, 2
),
followup AS (
    SELECT c.hall, {case_key} AS key,
        count(*) AS cases,
        count(*) FILTER (WHERE c.closed IS NOT NULL AND c.closed <= c.due) AS closed_on_time,
        count(*) FILTER (WHERE c.closed IS NOT NULL AND c.closed > c.due) AS closed_late,
        count(*) FILTER (WHERE c.closed IS NULL AND c.due >= %(now)s) AS open_in_time,
        count(*) FILTER (WHERE c.closed IS NULL AND c.due < %(now)s) AS overdue
    FROM cases c LEFT JOIN services s ON s.hall = c.hall AND s.id = c.service
    WHERE c.day BETWEEN %(start)s AND %(end)s
    GROUP BY 1, 2
)
SELECT c.hall, COALESCE(h.name, c.hall), c.key, c.issued, c.served, c.no_shows, c.voided,
    p.p50, p.p90, p.wait_max, c.level_5, c.level_4, c.level_3, c.level_2, c.level_1,
    c.unrated, COALESCE(r.refusals, 0), c.mean,
    COALESCE(f.cases, 0), COALESCE(f.closed_on_time, 0), COALESCE(f.closed_late, 0),
    COALESCE(f.open_in_time, 0), COALESCE(f.overdue, 0)
FROM counts c
LEFT JOIN halls h ON h.id = c.hall
LEFT JOIN pct p ON p.hall = c.hall AND p.key = c.key
LEFT JOIN refused r ON r.hall = c.hall AND r.key = c.key
LEFT JOIN followup f ON f.hall = c.hall AND f.key = c.key
ORDER BY c.hall, c.key
"""


@dataclass(frozen=True)
class Row:
    hall: str
    hall_name: str
    key: str
    issued: int
    served: int
    no_shows: int
    voided: int
    wait_p50_s: float | None
    wait_p90_s: float | None
    wait_max_s: float | None
    levels: dict[int, int]
    unrated: int
    refusals: int
    mean_level: float | None
    cases: int
    closed_on_time: int
    closed_late: int
    open_in_time: int
    overdue: int

    @property
    def rated(self) -> int:
        return sum(self.levels.values())

    @property
    def satisfaction(self) -> float | None:
        return (self.levels[5] + self.levels[4]) / self.rated if self.rated else None

    @property
    def bad_ratings(self) -> int:
        return self.levels[2] + self.levels[1]

    @property
    def score(self) -> float | None:
        return None if self.mean_level is None else round(self.mean_level * 20, 1)

    def csv_row(self) -> dict[str, Any]:
        return {
            "hall": self.hall,
            "hall_name": self.hall_name,
            "key": self.key,
            "issued": self.issued,
            "served": self.served,
            "no_shows": self.no_shows,
            "voided": self.voided,
            "wait_p50_min": _minutes(self.wait_p50_s),
            "wait_p90_min": _minutes(self.wait_p90_s),
            "wait_max_min": _minutes(self.wait_max_s),
            "satisfaction": None if self.satisfaction is None else round(self.satisfaction, 3),
            **{f"level_{n}": self.levels[n] for n in sorted(LEVELS, reverse=True)},
            "unrated": self.unrated,
            "quota_refusals": self.refusals,
            "bad_ratings": self.bad_ratings,
            "cases_closed_on_time": self.closed_on_time,
            "cases_closed_late": self.closed_late,
            "cases_open_in_time": self.open_in_time,
            "cases_overdue": self.overdue,
            "score": self.score,
        }


_APPOINTMENTS = """
SELECT a.hall, COALESCE(h.name, a.hall), a.day, a.service,
    count(*) FILTER (WHERE a.kind = 'booked'),
    count(*) FILTER (WHERE a.kind = 'checked_in'),
    count(*) FILTER (WHERE a.kind = 'no_show')
FROM appointments a LEFT JOIN halls h ON h.id = a.hall
WHERE a.day BETWEEN %(start)s AND %(end)s
GROUP BY 1, 2, 3, 4
ORDER BY 1, 3, 4
"""


@dataclass(frozen=True)
class AppointmentRow:
    """A hall's online appointments of one day and service (by the slot's day)."""

    hall: str
    hall_name: str
    day: dt.date
    service: str
    booked: int
    checked_in: int
    no_shows: int

    def csv_row(self) -> dict[str, Any]:
        return {
            "hall": self.hall,
            "hall_name": self.hall_name,
            "day": self.day.isoformat(),
            "service": self.service,
            "booked": self.booked,
            "checked_in": self.checked_in,
            "no_shows": self.no_shows,
        }


APPOINTMENT_COLUMNS = list(AppointmentRow("", "", dt.date.min, "", 0, 0, 0).csv_row())


@dataclass(frozen=True)
class CityReport:
    start: dt.date
    end: dt.date
    made: dt.datetime
    groups: dict[str, list[Row]]  # "halls", "departments", "services"
    appointments: list[AppointmentRow] = field(default_factory=list)


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def build(dsn: str, start: dt.date, end: dt.date, now: dt.datetime | None = None) -> CityReport:
    """Every figure of the period [start, end] (local days of each hall), as of `now`."""
    now = now or dt.datetime.now(dt.UTC)
    params = {
        "start": start,
        "end": end,
        "start_text": start.isoformat(),
        "end_text": end.isoformat(),
        # refusals carry their local day; their time is within a day of it anywhere
        "start_at": dt.datetime.combine(start - dt.timedelta(days=1), dt.time(), dt.UTC),
        "end_at": dt.datetime.combine(end + dt.timedelta(days=2), dt.time(), dt.UTC),
        "now": now,
    }
    groups: dict[str, list[Row]] = {}
    with psycopg.connect(dsn) as conn:
        conn.read_only = True
        for name, key in _GROUPS.items():
            sql = _FIGURES.format(
                key=key,
                refused_key=key.replace("t.service", "(e.data->>'service')"),
                case_key=key.replace("t.service", "c.service"),
            )
            rows = conn.execute(sql.encode(), params).fetchall()
            groups[name] = [_row(r) for r in rows]
        booked = [
            AppointmentRow(*r) for r in conn.execute(_APPOINTMENTS.encode(), params).fetchall()
        ]
    return CityReport(start, end, now, groups, booked)


def _row(r: tuple[Any, ...]) -> Row:
    return Row(
        hall=r[0],
        hall_name=r[1],
        key=r[2],
        issued=r[3],
        served=r[4],
        no_shows=r[5],
        voided=r[6],
        wait_p50_s=r[7],
        wait_p90_s=r[8],
        wait_max_s=r[9],
        levels={5: r[10], 4: r[11], 3: r[12], 2: r[13], 1: r[14]},
        unrated=r[15],
        refusals=r[16],
        mean_level=None if r[17] is None else float(r[17]),
        cases=r[18],
        closed_on_time=r[19],
        closed_late=r[20],
        open_in_time=r[21],
        overdue=r[22],
    )


# ---- output -----------------------------------------------------------------

_EMPTY = Row(
    "", "", "", 0, 0, 0, 0, None, None, None, dict.fromkeys(LEVELS, 0), 0, 0, None, 0, 0, 0, 0, 0
)
CSV_COLUMNS = list(_EMPTY.csv_row().keys())


def write(report: CityReport, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in report.groups.items():
        with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(r.csv_row() for r in rows)
    with (out / "appointments.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=APPOINTMENT_COLUMNS)
        writer.writeheader()
        writer.writerows(r.csv_row() for r in report.appointments)
    page = out / "city.html"
    page.write_text(_html(report), encoding="utf-8")
    return page


def _appointments_table(rows: list[AppointmentRow]) -> str:
    """Per hall and day (the services summed; appointments.csv has each)."""
    days: dict[tuple[str, dt.date], list[int]] = {}
    names: dict[str, str] = {}
    for r in rows:
        names[r.hall] = r.hall_name
        totals = days.setdefault((r.hall, r.day), [0, 0, 0])
        totals[0] += r.booked
        totals[1] += r.checked_in
        totals[2] += r.no_shows
    if not days:
        return "<p>No appointments.</p>"
    head = (
        "<tr><th>大厅 hall</th><th>日期 day</th><th>预约 booked</th><th>签到 checked in</th>"
        "<th>爽约 no-shows</th></tr>"
    )
    body = "".join(
        f"<tr><th>{html.escape(names[hall])}</th><th>{day.isoformat()}</th>"
        + "".join(f"<td>{n}</td>" for n in totals)
        + "</tr>"
        for (hall, day), totals in days.items()
    )
    return f"<table>{head}{body}</table>"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _table(rows: list[Row], key_title: str | None) -> str:
    head = (
        "<tr><th>大厅 hall</th>"
        + (f"<th>{html.escape(key_title)}</th>" if key_title else "")
        + "<th>issued</th><th>served</th><th>no-shows</th><th>voided</th>"
        "<th>wait p50</th><th>p90</th><th>satisfaction</th>"
        + "".join(f"<th>{LEVELS[n]}</th>" for n in sorted(LEVELS, reverse=True))
        + "<th>unrated</th><th>refusals</th><th>差评</th><th>整改按时</th><th>整改超时</th>"
        "<th>处理中</th><th>逾期</th><th>score</th></tr>"
    )
    body = []
    for r in rows:
        cells = [
            r.issued,
            r.served,
            r.no_shows,
            r.voided,
            _fmt(_minutes(r.wait_p50_s)),
            _fmt(_minutes(r.wait_p90_s)),
            _pct(r.satisfaction),
            *(r.levels[n] for n in sorted(LEVELS, reverse=True)),
            r.unrated,
            r.refusals,
            r.bad_ratings,
            r.closed_on_time,
            r.closed_late,
            r.open_in_time,
            f"<b class='overdue'>{r.overdue}</b>" if r.overdue else 0,
            _fmt(r.score),
        ]
        body.append(
            f"<tr><th>{html.escape(r.hall_name)}</th>"
            + (f"<th>{html.escape(r.key)}</th>" if key_title else "")
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return f"<table>{head}{''.join(body)}</table>" if body else "<p>No tickets.</p>"


def _html(r: CityReport) -> str:
    halls = r.groups.get("halls", [])
    issued = sum(h.issued for h in halls)
    rated = sum(h.rated for h in halls)
    good = sum(h.levels[5] + h.levels[4] for h in halls)
    overdue = sum(h.overdue for h in halls)
    period = f"{r.start.isoformat()} — {r.end.isoformat()}"
    parts = [
        "<!doctype html><html lang='zh-CN'><meta charset='utf-8'>"
        f"<title>Quhao city report {period}</title><style>{_CSS}</style>",
        f"<h1>政务服务监察 City report {html.escape(period)}</h1>",
        f"<p><b>{len(halls)}</b> halls, <b>{issued}</b> tickets, satisfaction "
        f"<b>{_pct(good / rated if rated else None)}</b> of {rated} rated, "
        f"<b>{overdue}</b> bad-rating follow-ups overdue "
        f"(as of {r.made.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC). Read-only; "
        "figures from the city database.</p>",
        "<h2>Halls</h2>",
        _table(halls, None),
        "<h2>Departments</h2>",
        _table(r.groups.get("departments", []), "部门 department"),
        "<h2>Services</h2>",
        _table(r.groups.get("services", []), "业务 service"),
        "<h2>网上预约 Appointments</h2>",
        _appointments_table(r.appointments),
        "<p class='files'>CSV: <a href='halls.csv'>halls</a> · "
        "<a href='departments.csv'>departments</a> · <a href='services.csv'>services</a> · "
        "<a href='appointments.csv'>appointments</a></p>",
    ]
    return "\n".join(parts) + "</html>\n"


_CSS = """body{font-family:'WenQuanYi Micro Hei',sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f4f4f4}
.overdue{color:#c00}"""

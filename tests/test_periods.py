"""Period reports (`quhao report --month/--week/--from --to`) over a month made through the
real engine and store (hall/monthsim.py): the figures match SQL written here over the
hall's database; an upheld appeal changes the clerk's score and rate, not the record; the
page has its charts and the CSV parses; hypothesis on the pure core."""

from __future__ import annotations

import csv
import math
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hall.monthsim import DEPARTMENTS, Month, MonthSpec, build_month
from hall.periods import (
    PeriodReport,
    Rows,
    ServiceInfo,
    TicketRow,
    compute,
    parse_period,
    percentile,
    period_report,
    read,
    services_of,
)
from hall.periods_html import write
from quhao.config import load
from quhao.config.loops import Scoring
from tests.helpers import ROOT, SITE
from tests.test_export import NINE, S001, S002, Log

NOVEMBER = ("2026-11-01", "2026-11-30")


@dataclass
class Built:
    month: Month
    report: PeriodReport
    db: sqlite3.Connection
    out: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("month")
    month = build_month(folder / "hall", MonthSpec(days=30, per_day=200))
    report = period_report(month.database, parse_period(month="2026-11"), load(month.site))
    write(report, folder / "report")
    db = sqlite3.connect(month.database)
    yield Built(month, report, db, folder / "report")
    db.close()


def sql_counts(db: sqlite3.Connection, column: str) -> dict[str, tuple[int, int, int]]:
    """(tickets, served, no-shows) per value of a tickets column."""
    return {
        str(key): (n, served, skipped)
        for key, n, served, skipped in db.execute(
            f"SELECT {column}, COUNT(*), SUM(status = 'finished'), SUM(status = 'skipped') "
            f"FROM tickets WHERE day BETWEEN ? AND ? AND {column} IS NOT NULL GROUP BY {column}",
            NOVEMBER,
        )
    }


def sql_wait(db: sqlite3.Connection, column: str, key: str, q: float) -> float:
    """The nearest-rank percentile of waits before the first call, in SQL."""
    where = f"day BETWEEN ? AND ? AND {column} = ? AND first_called_at IS NOT NULL"
    (n,) = db.execute(f"SELECT COUNT(*) FROM tickets WHERE {where}", (*NOVEMBER, key)).fetchone()
    (wait,) = db.execute(
        f"SELECT first_called_at - issued_at AS w FROM tickets WHERE {where} "
        "ORDER BY w LIMIT 1 OFFSET ?",
        (*NOVEMBER, key, max(0, math.ceil(q / 100 * n) - 1)),
    ).fetchone()
    return float(wait)


UPHELD = """SELECT json_extract(o.data, '$.ticket') FROM events o JOIN events d
    ON json_extract(d.data, '$.case') = json_extract(o.data, '$.case')
    WHERE o.type = 'case.opened' AND d.type = 'case.decided'
    AND json_extract(d.data, '$.decision') = 'upheld'"""


def sql_satisfaction(db: sqlite3.Connection, column: str) -> dict[str, float]:
    """(非常满意 + 满意) / (ratings − ratings whose appeal was upheld), per value."""
    return {
        str(key): good / counted
        for key, good, counted in db.execute(
            f"SELECT {column}, SUM(rating IN (4, 5)), COUNT(*) - SUM(id IN ({UPHELD})) "
            "FROM tickets WHERE day BETWEEN ? AND ? AND rating_state = 'rated' "
            f"AND {column} IS NOT NULL GROUP BY {column}",
            NOVEMBER,
        )
    }


def test_month_figures_match_sql_over_the_halls_database(built: Built) -> None:
    db, report = built.db, built.report
    hall = report.hall
    (n, served, skipped) = db.execute(
        "SELECT COUNT(*), SUM(status = 'finished'), SUM(status = 'skipped') FROM tickets "
        "WHERE day BETWEEN ? AND ?",
        NOVEMBER,
    ).fetchone()
    assert (hall.tickets, hall.served, hall.no_shows) == (n, served, skipped)
    assert n == built.month.tickets > 5000  # every ticket of the month is in it
    for column, kind in (("staff", "clerk"), ("service", "service"), ("window", "window")):
        groups = report.groups[kind]
        expected = sql_counts(db, column)
        assert {k: (g.tickets, g.served, g.no_shows) for k, g in groups.items()} == expected
        satisfaction = sql_satisfaction(db, column)
        for key, group in groups.items():
            assert group.satisfaction == pytest.approx(satisfaction[key]), (kind, key)
            assert percentile(group.waits, 50) == pytest.approx(sql_wait(db, column, key, 50))
            assert percentile(group.waits, 90) == pytest.approx(sql_wait(db, column, key, 90))
    # departments are the site's grouping of services
    by_department: dict[str, int] = {}
    for service, (count, _, _) in sql_counts(db, "service").items():
        by_department[DEPARTMENTS[service]] = by_department.get(DEPARTMENTS[service], 0) + count
    assert {k: g.tickets for k, g in report.groups["department"].items()} == by_department
    # follow-up of bad ratings and alerts, from the log
    counts = dict(db.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
    assert hall.cases == counts["case.opened"] == hall.bad > 0
    assert hall.appealed == counts["case.appealed"] > 0
    assert hall.upheld == len(db.execute(UPHELD).fetchall()) == hall.excluded > 0
    assert hall.on_time + hall.late + hall.overdue + hall.open == hall.cases
    assert hall.overdue > 0 and hall.on_time > 0
    assert hall.max_wait_alerts == counts["alert.max_wait"] > 0
    assert sum(g.tickets for g in report.days.values()) == hall.tickets
    assert not report.appointments_seen  # none in the log: the report shows "—"


def test_score_is_the_weighted_mean_of_its_parts(built: Built) -> None:
    weights = built.report.weights
    for group in built.report.groups["clerk"].values():
        parts = group.parts()
        assert all(p is not None and 0 <= p <= 100 for p in parts.values())
        expected = sum(weights[k] * (parts[k] or 0) for k in weights) / sum(weights.values())
        assert group.score(weights) == pytest.approx(expected)
    # other weights in [scoring]: only the satisfaction rate counts
    db, month = built.db, built.month
    config = load(month.site)
    period = parse_period(month="2026-11")
    rows = read(db, period)
    only = compute(period, rows, services_of(config), scoring=Scoring(followup=0, wait=0, speed=0))
    for group in only.groups["clerk"].values():
        assert group.score(only.weights) == pytest.approx(100 * (group.satisfaction or 0))


def test_page_has_the_months_charts_and_the_csv_parses(built: Built) -> None:
    page = (built.out / "period.html").read_text()
    for chart in ("tickets per day", "satisfaction per week", "waits per service"):
        assert f"aria-label='{chart}'" in page
    assert "<script" not in page and "http" not in page  # nothing fetched, no JS
    assert page.count("<rect") >= 30 + 5 + 2 * 6  # a bar a day, a week, two a service
    rows = list(csv.DictReader((built.out / "period.csv").open(encoding="utf-8")))
    hall = next(r for r in rows if r["kind"] == "hall")
    assert int(hall["tickets"]) == built.report.hall.tickets
    assert float(hall["satisfaction"]) == pytest.approx(built.report.hall.satisfaction, abs=1e-4)
    assert hall["appointment_checkins"] == ""  # no appointment events: empty, not 0
    clerks = [r for r in rows if r["kind"] == "clerk"]
    assert {r["key"] for r in clerks} == set(built.report.groups["clerk"])
    assert all(0 <= float(r["score"]) <= 100 for r in clerks)
    days = list(csv.DictReader((built.out / "period-days.csv").open(encoding="utf-8")))
    assert [d["day"] for d in days] == [f"2026-11-{n:02d}" for n in range(1, 31)]


def test_quhao_report_takes_a_week_and_refuses_a_bad_period(built: Built, tmp_path: Path) -> None:
    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "report", "--db", str(built.month.database),
             "--config", str(built.month.site), "--out", str(tmp_path), *args],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip

    week = report("--week", "2026-W47")
    assert week.returncode == 0, week.stderr
    assert (tmp_path / "period.html").exists()
    days = list(csv.DictReader((tmp_path / "period-days.csv").open(encoding="utf-8")))
    assert [d["day"] for d in days] == [f"2026-11-{n}" for n in range(16, 23)]
    run = report("--month", "2026-11", "--week", "2026-W47")
    assert run.returncode == 2 and "give one of" in run.stderr, run.stderr


@pytest.mark.parametrize(
    ("period", "message"),
    [
        ({"month": "2026-13"}, "expected a month"),
        ({"month": "26-11"}, "expected a month"),
        ({"week": "2026-W54"}, "no such ISO week"),
        ({"week": "47"}, "expected an ISO week"),
        ({"day": "2026-11-31"}, "expected a day"),
        ({"start": "2026-11-05", "end": "2026-11-01"}, "is before"),
        ({"start": "2026-11-05"}, "go together"),
        ({"start": "2020-01-01", "end": "2026-01-01"}, "at most 366 days"),
        ({}, "give one of"),
    ],
)
def test_a_bad_period_is_refused_with_the_reason(period: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_period(**period)


def test_an_upheld_appeal_leaves_the_record_and_raises_the_clerks_score(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.ask("counter-W1", "login", NINE, **S001)
    for n, (level, reason) in enumerate([(5, ""), (1, "态度差"), (4, ""), (2, "等太久")]):
        at = NINE + 600 * n
        number = log.ask("kiosk-K1", "issue", at, service="social",
                         person={"key": f"{n + 1:064x}"})["ticket"]["number"]  # fmt: skip
        log.ask("counter-W1", "call", at + 60)
        log.ask("counter-W1", "finish", at + 300)
        log.ask("counter-W1", "rate", at + 310, ticket=number, level=level, reason=reason)
    config, day = load(SITE), parse_period(day="2026-11-23")

    def clerk() -> tuple[float | None, float | None, int, int]:
        report = period_report(tmp_path / "hall.sqlite", day, config)
        g = report.groups["clerk"]["S001"]
        return g.satisfaction, g.score(report.weights), g.levels[1], g.excluded

    satisfaction, score, very_bad, excluded = clerk()
    assert (satisfaction, very_bad, excluded) == (0.5, 1, 0)
    # the clerk appeals both; the supervisor upholds one and rejects the other
    for case, decision in (("C20261123-A002", "upheld"), ("C20261123-A004", "rejected")):
        log.ask("office", "case_appeal", NINE + 7200, case=case, note="已一次性告知", by=S001)
        log.ask("office", "case_decide", NINE + 7300, case=case, decision=decision,
                note="经核查", by=S002)  # fmt: skip
    after, raised, very_bad, excluded = clerk()
    assert after == pytest.approx(2 / 3)  # 2 good of 3 counted: the upheld one is out
    assert very_bad == 1 and excluded == 1  # still on record
    assert score is not None and raised is not None and raised > score
    log.store.close()


def test_appointment_check_ins_and_no_shows_count_where_they_belong() -> None:
    """As hall/appointments.py logs them: a check-in names its ticket, a no-show the slot's
    day and service (quhao/messages/appointments.py)."""
    served = TicketRow("2026-11-23/A001", "2026-11-23", "a", "a", "finished", 1.0, 2.0, 2.0,
                       3.0, 5, "S1", None, "none")  # fmt: skip
    slot = {"ref": "WB-1", "day": "2026-11-23", "service": "b", "start": 0, "end": 1}
    appointments = [
        (2.0, "appointment.checked_in", {**slot, "service": "a", "ticket": served.id}),
        (9.0, "appointment.no_show", slot),
        (9.0, "appointment.booked", slot),  # not a check-in, not a no-show
    ]
    report = compute(parse_period(week="2026-W48"), Rows([served], {}, [], appointments),
                     SERVICES)  # fmt: skip
    assert report.appointments_seen
    assert (report.hall.checkins, report.hall.appointment_no_shows) == (1, 1)
    assert report.groups["clerk"]["S1"].checkins == 1
    assert report.groups["service"]["b"].appointment_no_shows == 1
    assert report.groups["department"]["d2"].appointment_no_shows == 1
    assert report.days["2026-11-23"].appointment_no_shows == 1


# ---- the pure core ------------------------------------------------------------------

SERVICES = {"a": ServiceInfo("A", "d1", 600, 300), "b": ServiceInfo("B", "d2", 600, 300)}
STATUSES = ("waiting", "called", "finished", "skipped", "voided", "expired")


@st.composite
def ticket_rows(draw: st.DrawFn) -> list[TicketRow]:
    rows = []
    for n in range(draw(st.integers(0, 30))):
        day = f"2026-11-{draw(st.integers(1, 30)):02d}"
        issued = 1_795_000_000.0 + n * 60
        called = draw(st.one_of(st.none(), st.floats(0, 7200)))
        took = draw(st.floats(1, 1800))
        status = draw(st.sampled_from(STATUSES))
        rated = status == "finished" and draw(st.booleans())
        rows.append(
            TicketRow(
                f"{day}/A{n:03d}",
                day,
                draw(st.sampled_from("ab")),
                draw(st.sampled_from("ab")),
                status,
                issued,
                None if called is None else issued + called,
                None if called is None else issued + called,
                None if called is None else issued + called + took,
                draw(st.one_of(st.none(), st.integers(1, 3))),
                draw(st.one_of(st.none(), st.sampled_from(["S1", "S2"]))),
                draw(st.integers(1, 5)) if rated else None,
                "rated" if rated else "none",
            )
        )
    return rows


@settings(max_examples=50, deadline=None)
@given(ticket_rows(), st.tuples(*[st.floats(0, 100)] * 4))
def test_groups_add_up_and_rates_and_scores_stay_in_bounds(
    tickets: list[TicketRow], weights: tuple[float, float, float, float]
) -> None:
    names = ("satisfaction", "followup", "wait", "speed")
    scoring = Scoring(**dict(zip(names, weights, strict=True)))
    report = compute(parse_period(month="2026-11"), Rows(tickets, {}, [], []), SERVICES,
                     scoring=scoring)  # fmt: skip
    hall = report.hall
    assert hall.tickets == len(tickets)
    for kind in ("department", "service"):
        assert sum(g.tickets for g in report.groups[kind].values()) == hall.tickets
    assert sum(g.tickets for g in report.days.values()) == hall.tickets
    assert sum(g.tickets for g in report.weeks.values()) == hall.tickets
    for kind in ("hall", "department", "service", "window", "clerk"):
        for g in report.groups[kind].values():
            assert g.satisfaction is None or 0 <= g.satisfaction <= 1
            score = g.score(report.weights)
            assert score is None or -1e-9 <= score <= 100 + 1e-9
            p50, p90 = percentile(g.waits, 50), percentile(g.waits, 90)
            assert (p50 is None) == (p90 is None)
            assert p50 is None or p90 is None or p50 <= p90


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
def test_a_week_is_monday_to_sunday_and_a_month_whole(day: date) -> None:
    year, week, _ = day.isocalendar()
    period = parse_period(week=f"{year}-W{week:02d}")
    assert period.first.weekday() == 0 and len(period.days) == 7 and day in period.days
    month = parse_period(month=f"{day.year}-{day.month:02d}")
    assert month.first.day == 1 and day in month.days
    assert (month.last + timedelta(days=1)).day == 1
    assert re.fullmatch(r"\d{4}-\d{2}", month.label)

"""The period report as CSV: `period.csv` (one row per hall, department, service, window
and clerk, with its kind) and `period-days.csv` (one row per day). Minutes to 0.1,
rates and scores as fractions / points to 0.1; empty where there is nothing to measure."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from hall.periods import KINDS, LEVELS, Group, PeriodReport, ordered

COLUMNS = (
    "kind",
    "key",
    "name",
    "tickets",
    "served",
    "no_shows",
    "voided",
    "expired",
    "wait_p50_min",
    "wait_p90_min",
    "service_mean_min",
    "satisfaction",
    *(f"level_{n}" for n in sorted(LEVELS, reverse=True)),
    "rated",
    "excluded_by_appeal",
    "bad_ratings",
    "cases",
    "cases_on_time",
    "cases_late",
    "cases_overdue",
    "cases_open",
    "cases_appealed",
    "appeals_upheld",
    "max_wait_alerts",
    "appointment_checkins",
    "appointment_no_shows",
    "part_satisfaction",
    "part_followup",
    "part_wait",
    "part_speed",
    "score",
)
DAY_COLUMNS = (
    "day",
    "tickets",
    "served",
    "no_shows",
    "wait_p50_min",
    "wait_p90_min",
    "rated",
    "satisfaction",
    "bad_ratings",
    "max_wait_alerts",
)


def minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def points(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def row(g: Group, report: PeriodReport, kind: str) -> dict[str, Any]:
    """One group's figures as the CSV and the HTML show them."""
    parts = g.parts()
    appointments = report.appointments_seen
    return {
        "kind": kind,
        "key": g.key,
        "name": g.name,
        "tickets": g.tickets,
        "served": g.served,
        "no_shows": g.no_shows,
        "voided": g.voided,
        "expired": g.expired,
        "wait_p50_min": minutes(g.wait(50)),
        "wait_p90_min": minutes(g.wait(90)),
        "service_mean_min": minutes(
            sum(g.service_times) / len(g.service_times) if g.service_times else None
        ),
        "satisfaction": None if g.satisfaction is None else round(g.satisfaction, 4),
        **{f"level_{n}": g.levels[n] for n in sorted(LEVELS, reverse=True)},
        "rated": g.rated,
        "excluded_by_appeal": g.excluded,
        "bad_ratings": g.bad,
        "cases": g.cases,
        "cases_on_time": g.on_time,
        "cases_late": g.late,
        "cases_overdue": g.overdue,
        "cases_open": g.open,
        "cases_appealed": g.appealed,
        "appeals_upheld": g.upheld,
        "max_wait_alerts": g.max_wait_alerts,
        "appointment_checkins": g.checkins if appointments else None,
        "appointment_no_shows": g.appointment_no_shows if appointments else None,
        **{f"part_{name}": points(value) for name, value in parts.items()},
        "score": points(g.score(report.weights)),
    }


def rows(report: PeriodReport) -> list[dict[str, Any]]:
    return [
        row(g, report, kind) for kind, _ in KINDS for g in ordered(report.groups[kind].values())
    ]


def day_row(g: Group) -> dict[str, Any]:
    return {
        "day": g.key,
        "tickets": g.tickets,
        "served": g.served,
        "no_shows": g.no_shows,
        "wait_p50_min": minutes(g.wait(50)),
        "wait_p90_min": minutes(g.wait(90)),
        "rated": g.rated,
        "satisfaction": None if g.satisfaction is None else round(g.satisfaction, 4),
        "bad_ratings": g.bad,
        "max_wait_alerts": g.max_wait_alerts,
    }


def write_csv(report: PeriodReport, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    groups, days = out / "period.csv", out / "period-days.csv"
    with groups.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows(report))
    with days.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=DAY_COLUMNS)
        writer.writeheader()
        writer.writerows(day_row(g) for g in report.days.values())
    return [groups, days]

"""A short hall day at high speed through every daemon and simulator (the demo's own run)."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from cli.demo import DemoResult, run_demo
from simulators.crowd import plan_arrivals, short_day

# One simulated day for the whole module: its tests go to one worker (tests/conftest.py,
# ONE_WORKER_MODULES), which starts it first.
pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory, pcsc: object) -> Iterator[DemoResult]:
    # pcsc: this test process's pcscd (its socket and port are in the environment); the
    # demo's PC/SC readers use it rather than a pcscd of their own
    out = tmp_path_factory.mktemp("demo") / "run"
    yield run_demo("short", speed=200, out=out, seed=11, live=False)


def _db(result: DemoResult) -> sqlite3.Connection:
    return sqlite3.connect(result.out / "hall" / "hall.sqlite")


def test_every_issued_ticket_ends_served_skipped_or_voided(day: DemoResult) -> None:
    with _db(day) as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM tickets GROUP BY status"))
    assert sum(statuses.values()) >= 30, statuses
    assert set(statuses) <= {"finished", "skipped", "voided"}, statuses
    assert day.lost == 0
    assert day.stats.printed == sum(statuses.values())  # the crowd read every number off paper
    assert day.stats.slips >= 1  # someone tried a third ticket
    with _db(day) as db:
        lanes = dict(db.execute("SELECT priority, COUNT(*) FROM tickets GROUP BY priority"))
    assert lanes.get("appointment", 0) >= 1 and lanes.get("elderly", 0) >= 1, lanes

    assert day.stats.unknown_calls == 0


def test_the_report_matches_the_database(day: DemoResult) -> None:
    report = day.out / "report"
    with (report / "services.csv").open(encoding="utf-8") as handle:
        rows = {row["key"]: row for row in csv.DictReader(handle)}
    with _db(day) as db:
        for service, issued, served, skipped in db.execute(
            "SELECT service, COUNT(*), SUM(status = 'finished'), SUM(status = 'skipped') "
            "FROM tickets GROUP BY service"
        ):
            assert int(rows[service]["issued"]) == issued
            assert int(rows[service]["served"]) == served
            assert int(rows[service]["no_shows"]) == skipped
        refusals = db.execute(
            "SELECT COUNT(*) FROM events WHERE type = 'ticket.refused'"
        ).fetchone()[0]
        rated = dict(
            db.execute(
                "SELECT rating, COUNT(*) FROM tickets WHERE rating_state = 'rated' GROUP BY rating"
            )
        )
    assert int(rows["total"]["quota_refusals"]) == refusals == day.stats.slips
    for level in range(1, 6):
        assert int(rows["total"][f"level_{level}"]) == rated.get(level, 0)
    html = (report / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 3 and "Queue length" in html and "utilisation" in html
    for name in ("services", "windows", "clerks", "tickets", "alerts"):
        assert (report / f"{name}.csv").stat().st_size > 0
    assert list((day.out / "tickets").glob("K*/ticket-0001.png"))
    assert list((day.out / "led").glob("led-1-*.png"))
    assert "ticket-0001.png" in html


def test_surge_windows_opened_live_call_without_any_restart(day: DemoResult) -> None:
    assert day.surge_windows_called == [5, 6]
    assert day.hall_restarts == 0
    hall_log = (day.out / "logs" / "hall.log").read_text()
    assert hall_log.count("configuration reloaded") == 2
    assert "received SIGTERM" in hall_log and "Traceback" not in hall_log


def test_no_process_left_behind(day: DemoResult) -> None:
    assert day.leftovers == []


def test_no_raw_id_number_in_the_hall(day: DemoResult) -> None:
    scenario = short_day(date(2026, 11, 23))
    numbers = {c.holder.id_number for c in plan_arrivals(scenario, ZoneInfo("Asia/Shanghai"), 11)}
    data = (day.out / "hall" / "hall.sqlite").read_bytes()
    for log in (day.out / "logs").glob("*.log"):
        data += log.read_bytes()
    assert not [n for n in numbers if n.encode() in data]

"""The surge day at `make demo`'s speed through every daemon and simulator (the demo's own
run): ≥ 1,800 tickets, windows opened 8 → 15 → 32 live, every citizen ticketed or refused
by quota, the day over within 90 minutes of closing, the report matching the database — and
the screens' screenshots and an announcement WAV, the hall's outage with its offline tickets
(none lost), booked citizens checked in and the no-shows, a bad rating followed up."""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Iterator
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from cli.bench.surge import allowed_after_closing_s
from cli.demo import DEFAULT_SPEED, DemoResult, run_demo
from simulators.crowd import plan_arrivals
from simulators.scenario import surge_day

# One simulated day for the whole module: its tests go to one worker (tests/conftest.py,
# ONE_WORKER_MODULES), which starts it first.
pytestmark = [pytest.mark.long, pytest.mark.alone]
SEED = 7


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory, pcsc: object) -> Iterator[DemoResult]:
    # pcsc: this test process's pcscd (its socket and port are in the environment); the
    # demo's PC/SC readers use it rather than a pcscd of their own
    out = tmp_path_factory.mktemp("demo") / "run"
    yield run_demo("surge", speed=DEFAULT_SPEED, out=out, seed=SEED, live=False)


def _db(result: DemoResult) -> sqlite3.Connection:
    return sqlite3.connect(result.out / "hall" / "hall.sqlite")


def test_the_day_ends_within_an_hour_of_closing_and_the_outage(day: DemoResult) -> None:
    assert day.finished and not day.interrupted
    # the hall's ten-minute outage mid-surge stops every window: half an hour more for it
    assert day.outage is not None
    allowed = allowed_after_closing_s(day)
    assert day.day_end is not None and day.day_end <= day.closes + allowed, day.day_end
    with _db(day) as db:
        last_issue = db.execute("SELECT MAX(issued_at) FROM tickets").fetchone()[0]
    assert last_issue <= day.closes  # tickets stop at closing time


def test_every_citizen_is_ticketed_or_refused_by_quota(day: DemoResult) -> None:
    s = day.stats
    assert s.arrived == len(plan_arrivals(surge_day(date.fromisoformat(day.day)), TZ, SEED))
    assert s.printed + s.slips == s.arrived, s
    assert s.kiosk_failures == s.closed == s.unknown_calls == 0, s
    with _db(day) as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM tickets GROUP BY status"))
        lanes = dict(db.execute("SELECT priority, COUNT(*) FROM tickets GROUP BY priority"))
    assert sum(statuses.values()) >= 1800, statuses
    assert set(statuses) <= {"finished", "skipped", "voided"}, statuses
    assert day.lost == 0
    assert s.printed == sum(statuses.values())  # the crowd read every number off paper
    assert s.slips >= 1  # someone tried a third ticket
    assert lanes.get("elderly", 0) >= 1, lanes  # the priority lane
    assert set(s.kiosk_s) == {"sam", "pcsc", "typed"}  # every way to identify was used


def test_surge_windows_opened_live_call_without_any_restart(day: DemoResult) -> None:
    assert day.windows["social"] == 32
    first_new = sum(day.windows.values()) - 24 + 1  # 8 → 15 → 32: 24 windows opened live
    assert day.surge_windows_called == list(range(first_new, first_new + 24))
    assert day.hall_restarts == 1  # the outage's, below: none for the windows
    hall_log = (day.out / "logs" / "hall.log").read_text()
    assert hall_log.count("configuration reloaded") == 2
    assert "received SIGTERM" in hall_log and "Traceback" not in hall_log


def test_the_hall_outage_loses_nothing(day: DemoResult) -> None:
    assert day.outage is not None
    killed, back = day.outage
    assert back - killed >= 600  # ten minutes of hall time down
    assert day.hall_down_shown  # the live view said so
    with _db(day) as db:
        offline = db.execute(
            "SELECT COUNT(*) FROM events WHERE type = 'ticket.issued' "
            "AND json_extract(data, '$.offline')"
        ).fetchone()[0]
        ids = [n for (n,) in db.execute("SELECT day || number FROM tickets")]
    assert offline >= 1 and day.offline_tickets == offline
    assert len(ids) == len(set(ids))  # no number printed twice
    assert day.lost == 0
    with (day.out / "report" / "services.csv").open(encoding="utf-8") as handle:
        total = next(row for row in csv.DictReader(handle) if row["key"] == "total")
    assert int(total["offline"]) == offline


def test_booked_citizens_check_in_and_no_shows_are_counted(day: DemoResult) -> None:
    assert day.bookings["on_time"] >= 20 and day.bookings["no_show"] >= 1, day.bookings
    assert day.bookings.get("early", 0) + day.bookings.get("late", 0) >= 1, day.bookings
    checked_in = day.appointments.get("checked_in", 0)
    # every booked citizen on time got the booked ticket by the card alone (a few whose
    # kiosk line ran past the window take an ordinary one)
    assert checked_in >= day.bookings["on_time"] * 0.8, (checked_in, day.bookings)
    assert day.stats.checked_in == checked_in
    no_shows = day.appointments.get("no_show", 0)
    early_late = day.bookings.get("early", 0) + day.bookings.get("late", 0)
    assert day.bookings["no_show"] <= no_shows <= day.bookings["no_show"] + early_late
    with _db(day) as db:
        lane = db.execute("SELECT COUNT(*) FROM tickets WHERE priority = 'appointment'").fetchone()[
            0
        ]
    assert lane == checked_in
    assert day.period is not None  # the period report counts them
    with (day.period / "period.csv").open(encoding="utf-8") as handle:
        hall = next(row for row in csv.DictReader(handle) if row["kind"] == "hall")
    assert int(hall["appointment_checkins"]) == checked_in
    assert int(hall["appointment_no_shows"]) == no_shows


def test_a_bad_rating_is_followed_up_by_the_supervisor(day: DemoResult) -> None:
    assert len(day.followed_up) == 1, day.followed_up
    case = day.followed_up[0]
    with _db(day) as db:
        steps = [t for (t,) in db.execute("SELECT type FROM events WHERE type LIKE 'case.%'")]
    assert steps.count("case.updated") == 2, steps  # contacted, then resolved
    office = (day.out / "logs" / "office.log").read_text(encoding="utf-8")
    assert f"{case}: contacted" in office and f"{case}: resolved" in office
    assert day.period is not None  # the period report counts it followed up on time
    with (day.period / "period.csv").open(encoding="utf-8") as handle:
        hall = next(row for row in csv.DictReader(handle) if row["kind"] == "hall")
    assert int(hall["cases_on_time"]) == 1


def test_ratings_worsen_with_waiting(day: DemoResult) -> None:
    with _db(day) as db:
        short, long = (
            db.execute(
                "SELECT AVG(rating) FROM tickets WHERE rating_state = 'rated' AND "
                f"first_called_at - issued_at {where}"
            ).fetchone()[0]
            for where in ("<= 1800", "> 5400")
        )
    assert short is not None and short >= 4.0, short
    if long is not None:  # nobody waited over 90 minutes on a good day
        assert long < short - 1, (short, long)


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


def test_the_report_is_for_a_hall_manager(day: DemoResult) -> None:
    report = day.out / "report"
    with (report / "clerks.csv").open(encoding="utf-8") as handle:
        clerks = [row["name"] for row in csv.DictReader(handle)]
    assert "李敏 S001" in clerks  # by name and staff number
    with (report / "tickets.csv").open(encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    assert first["issued_at"].startswith(f"{day.day}T") and first["issued_at"].endswith("+08:00")
    html = (report / "report.html").read_text(encoding="utf-8")
    assert "longest waits" in html or "alert.max_wait" not in (report / "alerts.csv").read_text()
    assert "Every bad rating" in html
    assert len(html) < 400_000  # summarised, not every alert on the page


def test_no_process_left_behind(day: DemoResult) -> None:
    assert day.leftovers == []


def test_no_raw_id_number_in_the_hall(day: DemoResult) -> None:
    citizens = plan_arrivals(surge_day(date.fromisoformat(day.day)), TZ, SEED)
    numbers = {c.holder.id_number for c in citizens}
    found: set[str] = set()
    for path in [day.out / "hall" / "hall.sqlite", *(day.out / "logs").glob("*.log")]:
        found |= {m.decode() for m in re.findall(rb"\d{17}[\dX]", path.read_bytes())}
    assert not found & numbers


TZ = ZoneInfo("Asia/Shanghai")


def test_screens_screenshots_and_a_voice_announcement(day: DemoResult) -> None:
    shots = sorted(p.name for p in (day.out / "screens").glob("*.png"))
    assert "board.png" in shots and "window-1.png" in shots, shots
    assert any(name.startswith("ticket-") for name in shots), shots
    html = (day.out / "report" / "report.html").read_text(encoding="utf-8")
    for name in shots:
        assert f"../screens/{name}" in html
    wavs = sorted((day.out / "voice").glob("*.wav"))
    assert wavs and wavs[0].read_bytes()[:4] == b"RIFF"
    assert f"../voice/{wavs[0].name}" in html and "<audio" in html
    screens_log = (day.out / "logs" / "screens.log").read_text()
    assert "screens serving on http://127.0.0.1:" in screens_log and "Traceback" not in screens_log

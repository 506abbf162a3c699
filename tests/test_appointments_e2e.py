"""Online appointments through real parts: Mosquitto, the hall, `quhao appointments
import` as the office, kiosk-K1 with its SAM reader simulator, keypad FIFO and ESC/POS
printer simulator. Hall and kiosk share one clock starting Monday 2026-11-23 09:00, so the
check-in windows (30 minutes early to 15 late) do not depend on when the test runs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from quhao.broker import Mosquitto, free_port
from quhao.idnumber import with_check
from simulators.idcard import PcscStack, VirtualIdCard
from simulators.keys import KeypadFeeder
from simulators.printer import PrinterSimulator
from simulators.sam import CardHolder, SamSimulator
from tests.helpers import ROOT, Daemon, Device, Recorder, hall_daemon, wait_until
from tests.test_kiosk import ADULT, Hall, T, kiosk_site

HALL_TIME = "2026-11-23T09:00:00+08:00"
EARLY = CardHolder("赵预约", with_check("44010619920202345"), date(1992, 2, 2), gender="1")
TYPED = with_check("44010619850505321")  # a typed number: too late for its slot
BAD = with_check("44010619900101234")[:-1] + ("0" if ADULT.id_number[-1] != "0" else "1")


@pytest.fixture
def booked(broker: Mosquitto, tmp_path: Path, pcsc: PcscStack) -> Iterator[Hall]:
    """kiosk-K1 and the hall on one hall clock (09:00, running at real speed)."""
    clock = f"{HALL_TIME}@{time.time():.3f}"
    printer = PrinterSimulator(tmp_path / "tickets", port=free_port()).start()
    assert printer.port is not None
    site = kiosk_site(tmp_path, printer.port)
    # the office at a clerk's real default rate: the flood test meets it
    text = site.read_text()
    site.write_text(text.replace("counter = { per_s = 1000, burst = 1000 }", "counter = {}"))
    sam = SamSimulator(tmp_path / "sam-K1").start()
    keys = KeypadFeeder(tmp_path / "keys-K1.fifo")
    card = VirtualIdCard(pcsc.port)
    recorder = Recorder(broker.url, "quhao/#", client_id="appointments-recorder")
    hall = hall_daemon(broker.url, tmp_path / "hall", config=site, clock=clock).launch()
    kiosk = Daemon(
        ["kiosk", "--config", str(site), "--broker", broker.url, "--device", "kiosk-K1",
         "--state-dir", str(tmp_path / "kiosk"), "--clock", clock, "--log-level", "DEBUG"],
        tmp_path / "kiosk.log",
        "kiosk kiosk-K1 serving",
    ).launch()  # fmt: skip
    hall.wait_ready()
    kiosk.wait_ready()
    running = Hall(tmp_path, broker, hall, kiosk, printer, sam, card, keys, recorder)
    wait_until(lambda: running.status().get("state") == "in_service", what="kiosk in service")
    wait_until(lambda: "SAM reader ok" in kiosk.log(), what="SAM reader ready")
    running.clock = clock  # type: ignore[attr-defined]
    yield running
    assert kiosk.stop() == 0, kiosk.log()
    hall.stop()
    recorder.close()
    printer.close()
    sam.close()
    keys.close()


def import_file(hall: Hall, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "appointments", "import", str(path),
         "--config", str(hall.tmp / "site.toml"), "--broker", hall.broker.url,
         "--clock", hall.clock],  # type: ignore[attr-defined]
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_booked_citizens_check_in_by_card_early_and_late_ones_choose(booked: Hall) -> None:
    export = booked.tmp / "bookings.csv"
    export.write_text(
        "身份证号,姓名,事项,开始时间,结束时间,预约号\n"
        f"{ADULT.id_number},{ADULT.name},social,2026-11-23 09:10,2026-11-23 09:40,WB-1\n"
        f"{EARLY.id_number},{EARLY.name},social,2026-11-23 11:00,2026-11-23 11:30,WB-2\n"
        f"{TYPED},,tax,2026-11-23 08:30,2026-11-23 09:30,WB-3\n"
        f"{BAD},错号,social,2026-11-23 10:00,2026-11-23 10:30,WB-4\n",
        encoding="utf-8",
    )
    first = import_file(booked, export)
    assert first.returncode == 1, first.stderr  # one bad line: reported, the rest taken
    assert "bookings.csv:5: booking WB-4: ID number" in first.stderr
    assert "3 booked, 0 known already, 0 refused by the hall, 1 bad lines" in first.stdout
    again = import_file(booked, export)
    assert "0 booked, 3 known already" in again.stdout
    for raw in (ADULT.id_number, EARLY.id_number, TYPED, BAD, ADULT.name, "错号"):
        assert raw not in first.stdout + first.stderr + again.stdout + again.stderr
    with booked.db() as db:
        assert db.execute(
            "SELECT count(*) FROM events WHERE type = 'appointment.booked'"
        ).fetchone() == (3,)

    # booked for 09:10: a swipe with no key checks in (the window opened at 08:40)
    booked.swipe(ADULT)
    ticket = booked.printer.wait_for_tickets(1)[0]
    assert "社保业务" in ticket.text and "预约优先" in ticket.text and "A001" in ticket.text
    assert booked.tickets()[0][:3] == ("A001", "waiting", "appointment")

    # booked for 11:00: too early (opens 10:30); then the normal choice
    booked.swipe(EARLY)
    booked.said("未到预约签到时间（预约时段开始前30分钟起可签到），请选择业务取普通号")
    booked.keys.tap("KEY_F1")
    ticket = booked.printer.wait_for_tickets(2)[1]
    assert "A002" in ticket.text and "预约优先" not in ticket.text

    # booked for 08:30: check-in closed at 08:45; typed number, then 税务 by its key
    booked.keys.type(*[f"KEY_{c}" for c in TYPED], "KEY_ENTER")
    booked.said("已过预约签到时间，请选择业务取普通号")
    booked.keys.tap("KEY_F2")
    ticket = booked.printer.wait_for_tickets(3)[2]
    assert "B001" in ticket.text and "预约优先" not in ticket.text

    # the appointment key without a booking (already checked in): no priority
    booked.keys.type("KEY_A", "KEY_F1")
    booked.swipe(ADULT)
    ticket = booked.printer.wait_for_tickets(4)[3]
    assert "A003" in ticket.text and "预约优先" not in ticket.text
    assert [t[2] for t in booked.tickets()] == ["appointment", None, None, None]
    with booked.db() as db:
        checked = db.execute(
            "SELECT json_extract(data, '$.ref') FROM events WHERE type = 'appointment.checked_in'"
        ).fetchall()
    assert checked == [("WB-1",)]


def test_import_by_another_identity_is_refused_and_a_flood_is_bounded(booked: Hall) -> None:
    kiosk = Device(booked.broker.url, "kiosk-K2")
    office = Device(booked.broker.url, "office")
    try:
        slot = {"person_key": "ab" * 32, "service": "social", "start": 1795399200.0}
        one = [{**slot, "ref": "X-1", "end": 1795401000.0}]
        refused = kiosk.request("appointment_import", bookings=one)
        assert refused["error"]["code"] == "forbidden"
        answers = [
            office.request("appointment_import", bookings=[{**one[0], "ref": f"F-{n}"}])
            for n in range(40)
        ]
        codes = [a.get("error", {}).get("code", "ok") for a in answers]
        assert "rate_limited" in codes and codes.count("ok") < 40
        assert kiosk.request("checkin", person={"key": "cd" * 32})["error"]["code"] == (
            "no_appointment"
        )
    finally:
        kiosk.close()
        office.close()
    assert booked.hall.alive
    wait_until(lambda: booked.recorder.payloads(T.event("appointment.booked")), what="events")
    # the office's own requests carry keys to the hall; nothing the hall sends carries one
    published = [m.payload for m in list(booked.recorder.messages) if "/req/" not in m.topic]
    assert published and not any(("ab" * 32).encode() in p for p in published)

"""Online appointments, pure: the import file (CSV, JSON, bad lines by number, no ID number
in any message), idempotence by booking reference, the check-in window's edges, and the
engine's check-in, no-shows, forgetting, replay and snapshots. End to end through the real
hall, kiosk and simulators: tests/test_appointments_e2e.py."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from hall.appointments import (
    AppointmentBook,
    closes_at,
    no_show_at,
    opens_at,
    parse,
    window_verdict,
)
from hall.engine import Engine
from hall.model import Event
from hall.snapshot import forget_appointment_keys, restore, snapshot
from quhao.config import load
from quhao.config.loops import Appointments
from quhao.idnumber import with_check
from quhao.messages import Person
from quhao.personkey import person_key
from tests.helpers import SITE

TZ = ZoneInfo("Asia/Shanghai")
CONFIG = load(SITE)
SECRET = (SITE.parent / "test.secret").read_bytes().strip()
RULES = Appointments()  # 30 minutes early, 15 late
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=TZ).timestamp()  # Monday 09:00
ID_A = with_check("44010619900101234")
ID_B = with_check("44010619850505321")
KEY_A = person_key(SECRET, ID_A)
KEY_B = person_key(SECRET, ID_B)


def at(hh: int, mm: int = 0, day: int = 23) -> float:
    return datetime(2026, 11, day, hh, mm, tzinfo=TZ).timestamp()


CSV = f"""id_number,name,service,start,end,ref
{ID_A},李小明,social,2026-11-23 10:00,2026-11-23 10:30,WB-001
{ID_B},,tax,2026-11-23T14:00:00+08:00,2026-11-23T14:30:00+08:00,WB-002
{ID_A[:-1]}0,张三,social,2026-11-23 10:00,2026-11-23 10:30,WB-003
{ID_B},,nosuch,2026-11-23 10:00,2026-11-23 10:30,WB-004
{ID_B},,social,2026-11-23 11:00,2026-11-23 10:30,WB-005
{ID_B},,social,yesterday,2026-11-23 10:30,WB-006
{ID_A},李小明,social,2026-11-23 10:00,2026-11-23 10:30,WB-001
{ID_B},,social,2026-11-22 10:00,2026-11-22 10:30,WB-007
"""


def test_csv_bookings_become_person_keys_and_bad_lines_are_named_by_number() -> None:
    parsed = parse(CSV, SECRET, CONFIG.services, TZ, NOW, RULES)
    assert [(line, b.ref, b.service) for line, b in parsed.bookings] == [
        (2, "WB-001", "social"),
        (3, "WB-002", "tax"),
    ]
    assert parsed.bookings[0][1].person_key == KEY_A
    assert parsed.bookings[1][1].start == at(14)
    lines = [line for line, _ in parsed.errors]
    assert lines == [4, 5, 6, 7, 9]  # line 8 repeats line 2 exactly: nothing to say
    text = " ".join(why for _, why in parsed.errors)
    assert "check character" in text or "check" in text
    assert "nosuch" in text and "ends before it starts" in text and "is over" in text
    for raw in (ID_A, ID_B, ID_A[:-1] + "0", "李小明", "张三"):
        assert raw not in text and raw not in repr(parsed)


def test_json_export_and_a_changed_repeat_is_refused() -> None:
    entries = [
        {"身份证号": ID_A, "事项": "social", "start": "2026-11-23 10:00", "end": "2026-11-23 10:30",
         "预约号": "J1"},
        {"id_number": ID_A, "service": "social", "start": "2026-11-23 11:00",
         "end": "2026-11-23 11:30", "ref": "J1"},
        "garbage",
    ]  # fmt: skip
    parsed = parse(json.dumps({"appointments": entries}), SECRET, CONFIG.services, TZ, NOW, RULES)
    assert [b.ref for _, b in parsed.bookings] == ["J1"]
    assert [line for line, _ in parsed.errors] == [2, 3]
    assert parse("{not json", SECRET, CONFIG.services, TZ, NOW, RULES).errors[0][0] == 1


def test_a_header_without_a_needed_column_is_one_error() -> None:
    parsed = parse("id_number,service,start\n1,2,3\n", SECRET, CONFIG.services, TZ, NOW, RULES)
    assert parsed.bookings == [] and "end, ref" in parsed.errors[0][1]


@given(
    start_min=st.integers(0, 24 * 60 - 1),
    offset_s=st.integers(-3 * 3600, 3 * 3600),
    early=st.integers(0, 720),
    late=st.integers(0, 720),
)
def test_the_window_holds_both_edges_and_nothing_outside(
    start_min: int, offset_s: int, early: int, late: int
) -> None:
    rules = Appointments(early_minutes=early, late_minutes=late)
    start = at(0) + start_min * 60
    now = start + offset_s
    verdict = window_verdict(start, now, rules)
    assert (verdict == "open") == (start - early * 60 <= now <= start + late * 60)
    assert verdict == "too_early" or now >= opens_at(start, rules)
    assert window_verdict(start, opens_at(start, rules), rules) == "open"
    assert window_verdict(start, closes_at(start, rules), rules) == "open"
    assert window_verdict(start, closes_at(start, rules) + 0.001, rules) == "too_late"
    assert no_show_at(start, start + 1800, rules) >= closes_at(start, rules)


# ---- the engine -------------------------------------------------------------------


def booking(ref: str, key: str, service: str, start: float, minutes: int = 30) -> dict[str, Any]:
    return {"ref": ref, "person_key": key, "service": service, "start": start,
            "end": start + minutes * 60}  # fmt: skip


def engine_with_bookings() -> tuple[Engine, list[Event]]:
    engine = Engine(CONFIG, SECRET)
    log: list[Event] = []
    out = engine.handle(
        "office",
        "appointment_import",
        {
            "bookings": [
                booking("WB-1", KEY_A, "social", at(10)),
                booking("WB-2", KEY_B, "tax", at(14)),
            ]
        },
        NOW,
    )
    assert out.error is None and out.response["booked"] == ["WB-1", "WB-2"]
    log += out.events
    return engine, log


def test_reimporting_changes_nothing_and_bad_bookings_are_refused_alone() -> None:
    engine, _ = engine_with_bookings()
    again = engine.handle(
        "office",
        "appointment_import",
        {
            "bookings": [
                booking("WB-1", KEY_A, "social", at(10)),
                booking("WB-2", KEY_B, "tax", at(15)),  # another slot: refused, kept
                booking("WB-3", KEY_B, "nosuch", at(15)),
                booking("WB-4", KEY_B, "tax", at(8)),  # over
            ]
        },
        NOW,
    )
    assert again.events == []
    assert again.response["unchanged"] == ["WB-1"] and again.response["booked"] == []
    codes = {r["ref"]: r["code"] for r in again.response["refused"]}
    assert codes == {"WB-2": "bad_state", "WB-3": "unknown_service", "WB-4": "bad_request"}
    assert engine.appointments.bookings["WB-2"].start == at(14)


def test_only_the_office_imports_and_a_kiosk_checks_in() -> None:
    engine, _ = engine_with_bookings()
    person = {"key": KEY_A, "age": 36}
    for device, action, payload in (
        ("kiosk-K1", "appointment_import", {"bookings": []}),
        ("counter-W1", "checkin", {"person": person}),
        ("office", "checkin", {"person": person}),
    ):
        refusal = engine.handle(device, action, payload, NOW).error
        assert refusal is not None and refusal.code == "forbidden"


def test_check_in_gives_the_booked_ticket_within_the_window_only() -> None:
    engine, _ = engine_with_bookings()
    person = Person(key=KEY_A, age=36).model_dump()
    early = engine.handle("kiosk-K1", "checkin", {"person": person}, at(9, 29))
    assert early.error is not None and early.error.code == "too_early"
    out = engine.handle("kiosk-K1", "checkin", {"person": person}, at(9, 30))
    assert out.error is None
    assert out.response["ticket"]["service"] == "social"
    assert out.response["ticket"]["priority"] == "appointment"
    assert out.response["slot"] == {"start": at(10), "end": at(10, 30)}
    assert [e.type for e in out.events] == ["ticket.issued", "appointment.checked_in"]
    # checked in once: the same card again is a citizen without a booking
    again = engine.handle("kiosk-K1", "checkin", {"person": person}, at(9, 31))
    assert again.error is not None and again.error.code == "no_appointment"
    late = engine.handle("kiosk-K1", "checkin", {"person": {"key": KEY_B}}, at(14, 15, 23) + 1)
    assert late.error is not None and late.error.code == "too_late"
    nobody = engine.handle("kiosk-K1", "checkin", {"person": {"key": "ab" * 32}}, at(10))
    assert nobody.error is not None and nobody.error.code == "no_appointment"


def test_the_appointment_key_without_a_booking_gives_no_priority() -> None:
    engine, _ = engine_with_bookings()
    plain = engine.handle(
        "kiosk-K1",
        "issue",
        {"service": "social", "person": {"key": KEY_B}, "priority": "appointment"},
        at(10),
    )
    assert plain.error is None and plain.response["ticket"]["priority"] is None
    # a booked citizen who pressed the service key first is checked in all the same
    booked = engine.handle(
        "kiosk-K1", "issue", {"service": "social", "person": {"key": KEY_A}}, at(10)
    )
    assert booked.response["ticket"]["priority"] == "appointment"
    assert engine.appointments.bookings["WB-1"].state == "checked_in"


def test_no_shows_at_the_end_of_the_slot_then_forgotten_the_next_day() -> None:
    engine, _ = engine_with_bookings()
    engine.handle("kiosk-K1", "checkin", {"person": {"key": KEY_A}}, at(10))

    def appointments(events: list[Any]) -> list[tuple[str, Any]]:
        return [(e.type, e.data.get("ref")) for e in events if "appointment" in e.type]

    assert appointments(engine.tick(at(14, 29))) == []
    assert appointments(engine.tick(at(14, 30))) == [("appointment.no_show", "WB-2")]
    assert appointments(engine.tick(at(14, 31))) == []
    assert engine.appointments.bookings["WB-2"].state == "no_show"
    next_day = engine.tick(at(0, 1, day=24))
    assert ("appointments.forgotten", None) in appointments(next_day)
    assert engine.appointments.bookings == {} and engine.appointments._by_key == {}


def test_replay_and_snapshot_give_the_same_book() -> None:
    engine, log = engine_with_bookings()
    log += engine.handle("kiosk-K1", "checkin", {"person": {"key": KEY_A}}, at(10)).events
    data = snapshot(engine)
    log += engine.tick(at(14, 30))
    replayed = Engine(CONFIG, SECRET)
    for event in log:
        replayed.apply(event)
    assert replayed.appointments.rows() == engine.appointments.rows()
    restored = restore(CONFIG, SECRET, data)
    for event in log[-1:]:
        restored.apply(event)
    assert restored.appointments.rows() == engine.appointments.rows()
    assert restored.appointments._by_key == engine.appointments._by_key
    forgotten = forget_appointment_keys(data, "2026-11-24")
    assert all(row[1] is None for row in forgotten["appointments"])
    assert KEY_A in json.dumps(data["appointments"])
    assert KEY_A not in json.dumps(forgotten["appointments"])


def test_a_flood_of_bookings_stays_bounded_per_day() -> None:
    book = AppointmentBook()
    from hall import appointments as module

    lanes = {"social": ("appointment",)}
    module_max, module.MAX_PER_DAY = module.MAX_PER_DAY, 3
    try:
        from quhao.messages.appointments import Booking

        items = [Booking(**booking(f"F{i}", KEY_A, "social", at(10))) for i in range(5)]
        reply, events = book.importing(items, lanes, TZ, NOW, RULES)
    finally:
        module.MAX_PER_DAY = module_max
    assert len(events) == 3 and [r["code"] for r in reply["refused"]] == ["daily_cap_reached"] * 2

"""The queue engine's rules, one at a time. Pure: time is passed in."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hall.engine import Engine
from hall.model import Status
from hall.views import hall_state, window_state
from quhao.config import load, loads
from quhao.staffauth import card_proof

SITE = Path(__file__).parent / "sites" / "small.toml"
SECRET = b"engine-rules-test-secret"
S001 = {"staff": "S001", "pin": "1111"}  # may override (tests/sites/small.toml)
S002 = {"staff": "S002", "pin": "2222"}  # may not
TZ = ZoneInfo("Asia/Shanghai")
NINE = datetime(2026, 11, 23, 9, 0, tzinfo=TZ).timestamp()


@pytest.fixture
def engine() -> Engine:
    return Engine(load(SITE), SECRET)


def person(n: int, age: int = 30) -> dict:
    return {"key": f"{n:032x}", "age": age}


def issue(engine: Engine, service: str, now: float, n: int = 0, age: int = 30, **extra) -> dict:
    payload = {"service": service, "person": person(n, age), **extra}
    outcome = engine.handle("kiosk-K1", "issue", payload, now)
    assert outcome.error is None, outcome.error and outcome.error.message
    return outcome.response["ticket"]


def call(engine: Engine, terminal: str, now: float, **payload) -> dict | None:
    outcome = engine.handle(terminal, "call", payload, now)
    assert outcome.error is None, outcome.error and outcome.error.message
    return outcome.response["ticket"]


def refused(engine: Engine, device: str, action: str, payload: dict, now: float) -> str:
    outcome = engine.handle(device, action, payload, now)
    assert outcome.error is not None, f"{action} was not refused"
    assert outcome.events == [] or outcome.events[0].type == "ticket.refused"
    return outcome.error.code


def test_numbers_are_per_service_and_padded(engine: Engine) -> None:
    assert issue(engine, "social", NINE, 1)["number"] == "A001"
    assert issue(engine, "social", NINE + 1, 2)["number"] == "A002"
    assert issue(engine, "tax", NINE + 2, 3)["number"] == "B001"


def test_numbering_starts_again_at_local_midnight(engine: Engine) -> None:
    issue(engine, "social", NINE, 1)
    issue(engine, "social", NINE + 1, 2)
    next_day = datetime(2026, 11, 24, 0, 0, 1, tzinfo=TZ).timestamp()
    ticket = issue(engine, "social", next_day, 3)
    assert ticket["number"] == "A001" and ticket["id"] == "2026-11-24/A001"
    # yesterday's waiting ticket is not called today
    assert call(engine, "counter-W1", next_day + 5)["id"] == "2026-11-24/A001"
    assert call(engine, "counter-W1", next_day + 6) is None


def test_quota_is_a_sliding_window_and_override_is_recorded(engine: Engine) -> None:
    issue(engine, "social", NINE, 7)
    issue(engine, "social", NINE + 60, 7)
    assert (
        refused(engine, "kiosk-K1", "issue", {"service": "social", "person": person(7)}, NINE + 120)
        == "quota_exceeded"
    )
    # another service has its own count
    issue(engine, "tax", NINE + 130, 7)
    # staff S002 may not override, S001 may
    assert (
        refused(
            engine,
            "kiosk-K1",
            "issue",
            {"service": "social", "person": person(7), "override": S002},
            NINE + 140,
        )
        == "forbidden"
    )
    overridden = issue(engine, "social", NINE + 150, 7, override=S001)
    assert overridden["override"] is True
    assert engine.tickets[overridden["id"]].override_staff == "S001"
    # two hours after the first ticket, one slot is free again
    assert (
        refused(
            engine, "kiosk-K1", "issue", {"service": "social", "person": person(7)}, NINE + 7199
        )
        == "quota_exceeded"
    )
    issue(engine, "social", NINE + 7201 + 150, 7)


def test_voided_tickets_do_not_count_against_the_quota(engine: Engine) -> None:
    first = issue(engine, "social", NINE, 8)
    issue(engine, "social", NINE + 1, 8)
    assert engine.handle("kiosk-K1", "void", {"ticket": first["number"]}, NINE + 2).error is None
    issue(engine, "social", NINE + 3, 8)


def test_daily_cap(engine: Engine) -> None:
    for n in range(3):
        issue(engine, "tax", NINE + n, n)
    assert (
        refused(engine, "kiosk-K1", "issue", {"service": "tax", "person": person(9)}, NINE + 9)
        == "daily_cap_reached"
    )


def test_opening_hours() -> None:
    text = SITE.read_text().replace(
        'hours = ["00:00-24:00"]', 'hours = ["08:30-12:00"]\ndays = ["mon"]'
    )
    engine = Engine(loads(text, SITE))
    assert (
        refused(
            engine, "kiosk-K1", "issue", {"service": "social", "person": person(1)}, NINE - 3600
        )
        == "closed"
    )
    issue(engine, "social", NINE, 1)  # Monday 09:00
    tuesday = NINE + 86400
    assert (
        refused(engine, "kiosk-K1", "issue", {"service": "social", "person": person(2)}, tuesday)
        == "closed"
    )


def test_weighted_windows_prefer_the_heavier_service(engine: Engine) -> None:
    # window 1 serves social (weight 2) and tax (weight 1)
    tax = issue(engine, "tax", NINE, 1)
    social = issue(engine, "social", NINE + 30, 2)
    # at NINE+60: tax waited 61*1, social waited 31*2 = 62 -> social first
    assert call(engine, "counter-W1", NINE + 60)["id"] == social["id"]
    assert call(engine, "counter-W1", NINE + 61)["id"] == tax["id"]


def test_priority_first_but_ordinary_not_starved(engine: Engine) -> None:
    ordinary = [issue(engine, "social", NINE + i, i) for i in range(2)]
    elderly = [issue(engine, "social", NINE + 10 + i, 10 + i, age=80) for i in range(4)]
    assert all(t["priority"] == "elderly" for t in elderly)
    order = [call(engine, "counter-W1", NINE + 100 + i)["id"] for i in range(6)]
    # interleave = 2: two elderly, one ordinary, two elderly, one ordinary
    assert order == [
        elderly[0]["id"],
        elderly[1]["id"],
        ordinary[0]["id"],
        elderly[2]["id"],
        elderly[3]["id"],
        ordinary[1]["id"],
    ]


def test_appointment_and_green_lanes_must_exist_for_the_service() -> None:
    text = SITE.read_text().replace('id = "enquiry"', 'id = "enquiry"\npriorities = ["elderly"]')
    engine = Engine(loads(text, SITE))
    assert (
        refused(
            engine,
            "kiosk-K1",
            "issue",
            {"service": "enquiry", "person": None, "priority": "green"},
            NINE,
        )
        == "forbidden"
    )
    assert issue(engine, "social", NINE, 1, priority="green", override=S001)["priority"] == "green"


def test_a_named_staff_member_is_not_authority(engine: Engine) -> None:
    """Overrides and green tickets need a card proof or the PIN, never a bare staff id."""
    issue(engine, "social", NINE, 7)
    issue(engine, "social", NINE + 1, 7)
    beyond = {"service": "social", "person": person(7)}
    for claim in (
        {"staff": "S001"},  # named, not proven
        {"staff": "S001", "pin": "1112"},  # wrong PIN
        {"staff": "S001", "pin": "2222"},  # someone else's PIN
        {"card": card_proof(b"another-secret-entirely", "04A10001")},  # forged proof
        {"card": "04A10001"},  # the UID itself is not a proof
    ):
        assert refused(engine, "kiosk-K1", "issue", {**beyond, "override": claim}, NINE + 2) == (
            "forbidden"
        ), claim
    green = {"service": "social", "person": person(8), "priority": "green"}
    assert refused(engine, "kiosk-K1", "issue", green, NINE + 3) == "forbidden"
    by_card = issue(
        engine, "social", NINE + 4, 7, override={"card": card_proof(SECRET, "04a10001")}
    )
    assert engine.tickets[by_card["id"]].override_staff == "S001"
    assert engine.tickets[issue(engine, "social", NINE + 5, 7, override=S001)["id"]].override_staff


def test_a_hall_without_the_secret_refuses_card_proofs() -> None:
    engine = Engine(load(SITE))
    claim = {"card": card_proof(SECRET, "04A10001")}
    assert refused(engine, "counter-W1", "login", claim, NINE) == "forbidden"
    assert engine.handle("counter-W1", "login", S001, NINE).error is None


def test_ages_outside_a_lifetime_are_refused(engine: Engine) -> None:
    for age in (-1, 131, 10**6):
        payload = {"service": "social", "person": person(9, age)}
        assert refused(engine, "kiosk-K1", "issue", payload, NINE) == "bad_request"
    assert issue(engine, "social", NINE, 9, age=130)["priority"] == "elderly"


def test_call_while_serving_finishes_current_and_expect_guards_double_press(engine: Engine) -> None:
    a = issue(engine, "social", NINE, 1)
    b = issue(engine, "social", NINE + 1, 2)
    c = issue(engine, "social", NINE + 2, 3)
    assert call(engine, "counter-W1", NINE + 10, expect=None)["id"] == a["id"]
    # a bounced key press sends the same belief again: nobody new is called
    second = engine.handle("counter-W1", "call", {"expect": None}, NINE + 10.1)
    assert second.response["changed"] is False and second.response["ticket"]["id"] == a["id"]
    assert call(engine, "counter-W1", NINE + 60, expect="A001")["id"] == b["id"]
    assert engine.tickets[a["id"]].status == Status.FINISHED
    assert engine.tickets[c["id"]].status == Status.WAITING


def test_two_terminals_at_one_window_call_different_citizens(engine: Engine) -> None:
    a = issue(engine, "social", NINE, 1)
    b = issue(engine, "social", NINE + 1, 2)
    first = call(engine, "counter-W1", NINE + 5)
    second = call(engine, "counter-W1b", NINE + 5)
    assert {first["id"], second["id"]} == {a["id"], b["id"]}
    state = window_state(engine, 1)
    assert state["status"] == "serving" and len(state["terminals"]) == 2
    assert state["ticket"] in ("A001", "A002")


def test_recall_limit_turns_into_skip_and_reinstate_goes_behind(engine: Engine) -> None:
    tickets = [issue(engine, "social", NINE + i, i) for i in range(5)]
    call(engine, "counter-W1", NINE + 10)
    for _ in range(2):  # max_recalls = 2
        assert engine.handle("counter-W1", "recall", {}, NINE + 11).response["skipped"] is False
    third = engine.handle("counter-W1", "recall", {}, NINE + 12)
    assert third.response["skipped"] is True
    assert engine.tickets[tickets[0]["id"]].status == Status.SKIPPED
    back = engine.handle("counter-W1", "reinstate", {"ticket": "A001"}, NINE + 20)
    assert back.error is None and back.response["ahead"] == 2  # reinstate_behind = 2
    order = [call(engine, "counter-W1", NINE + 30 + i)["number"] for i in range(5)]
    assert order == ["A002", "A003", "A001", "A004", "A005"]


def test_transfer_keeps_the_original_issue_time(engine: Engine) -> None:
    first = issue(engine, "social", NINE, 1)
    later_tax = issue(engine, "tax", NINE + 100, 2)
    call(engine, "counter-W1", NINE + 200)
    moved = engine.handle("counter-W1", "transfer", {"service": "tax"}, NINE + 300)
    assert moved.error is None and moved.response["ticket"]["number"] == "A001"
    # window 2 serves tax: the transferred ticket, issued earlier, comes first
    assert call(engine, "counter-W2", NINE + 400)["id"] == first["id"]
    assert call(engine, "counter-W2", NINE + 401)["id"] == later_tax["id"]
    assert engine.tickets[first["id"]].path == ["social"]


def test_rating_rules_and_bad_rating_alert(engine: Engine) -> None:
    issue(engine, "social", NINE, 1)
    call(engine, "counter-W1", NINE + 1)
    assert (
        refused(engine, "counter-W1", "rate", {"ticket": "A001", "level": 5}, NINE + 2)
        == "bad_state"
    )  # not finished yet
    engine.handle("counter-W1", "finish", {}, NINE + 300)
    assert (
        refused(engine, "counter-W2", "rate", {"ticket": "A001", "level": 5}, NINE + 301)
        == "bad_state"
    )  # another window
    assert (
        refused(engine, "counter-W1", "rate", {"ticket": "A001", "level": 1}, NINE + 301)
        == "reason_required"
    )
    rated = engine.handle(
        "counter-W1", "rate", {"ticket": "A001", "level": 1, "reason": "等太久"}, NINE + 302
    )
    assert [e.type for e in rated.events] == ["ticket.rated", "alert.bad_rating", "case.opened"]
    again = engine.handle("counter-W1", "rate", {"ticket": "A001", "level": 5}, NINE + 303)
    assert again.response["changed"] is False and engine.tickets["2026-11-23/A001"].rating == 1


def test_unrated_is_recorded_as_unrated_not_satisfied(engine: Engine) -> None:
    issue(engine, "social", NINE, 1)
    call(engine, "counter-W1", NINE + 1)
    engine.handle("counter-W1", "finish", {}, NINE + 2)
    engine.handle("counter-W1", "rate", {"ticket": "A001", "level": None}, NINE + 40)
    ticket = engine.tickets["2026-11-23/A001"]
    assert ticket.rating_state == "unrated" and ticket.rating is None


def test_pause_resume_login_logout(engine: Engine) -> None:
    issue(engine, "social", NINE, 1)
    assert refused(engine, "counter-W1", "login", {"staff": "S001"}, NINE) == "forbidden"
    assert refused(engine, "counter-W1", "login", {**S001, "pin": "9999"}, NINE) == "forbidden"
    assert engine.handle("counter-W1", "login", S001, NINE).error is None
    assert refused(engine, "counter-W1", "login", {"staff": "S404", "pin": "1"}, NINE) == (
        "unknown_staff"
    )
    assert engine.handle("counter-W1", "pause", {}, NINE + 1).error is None
    assert window_state(engine, 1)["status"] == "paused"
    assert refused(engine, "counter-W1", "call", {}, NINE + 2) == "paused"
    engine.handle("counter-W1", "resume", {}, NINE + 3)
    ticket = call(engine, "counter-W1", NINE + 4)
    assert engine.tickets[ticket["id"]].staff == "S001"
    assert refused(engine, "counter-W1", "logout", {}, NINE + 5) == "busy"
    engine.handle("counter-W1", "finish", {}, NINE + 6)
    engine.handle("counter-W1", "logout", {}, NINE + 7)
    assert window_state(engine, 1)["status"] == "closed"


def test_window_profile_shows_the_clerk(engine: Engine) -> None:
    from hall.views import window_profile

    assert window_profile(engine, 1)["staff"] == []
    engine.handle("counter-W1", "login", {"card": card_proof(SECRET, "04A10001")}, NINE)
    profile = window_profile(engine, 1)
    assert profile["services"] == ["社保业务", "税务业务"]
    assert [c["name"] for c in profile["staff"]] == ["李敏"]


def test_require_login() -> None:
    text = SITE.read_text().replace("[queue]", "[queue]\nrequire_login = true")
    engine = Engine(loads(text, SITE))
    issue(engine, "social", NINE, 1)
    assert refused(engine, "counter-W1", "call", {}, NINE + 1) == "not_logged_in"
    engine.handle("counter-W1", "login", S002, NINE + 2)
    assert call(engine, "counter-W1", NINE + 3)["number"] == "A001"


def test_roles_come_from_the_config(engine: Engine) -> None:
    assert refused(engine, "counter-W1", "issue", {"service": "social"}, NINE) == "forbidden"
    assert refused(engine, "kiosk-K1", "call", {}, NINE) == "forbidden"
    assert refused(engine, "kiosk-K99", "issue", {"service": "social"}, NINE) == "forbidden"
    assert refused(engine, "kiosk-K1", "dance", {}, NINE) == "unknown_action"


def test_only_the_issuing_kiosk_voids_and_only_while_waiting(engine: Engine) -> None:
    issue(engine, "social", NINE, 1)
    assert refused(engine, "kiosk-K2", "void", {"ticket": "A001"}, NINE + 1) == "forbidden"
    call(engine, "counter-W1", NINE + 2)
    assert refused(engine, "kiosk-K1", "void", {"ticket": "A001"}, NINE + 3) == "bad_state"


def test_bad_payload_fields_are_bad_requests(engine: Engine) -> None:
    assert refused(engine, "kiosk-K1", "issue", {}, NINE) == "bad_request"
    assert refused(engine, "kiosk-K1", "issue", {"service": 5}, NINE) == "bad_request"
    assert (
        refused(engine, "kiosk-K1", "issue", {"service": "social", "person": None}, NINE)
        == "bad_request"
    )  # social needs an ID
    assert (
        refused(
            engine, "kiosk-K1", "issue", {"service": "social", "person": {"key": "NOT-HEX"}}, NINE
        )
        == "bad_request"
    )
    assert refused(engine, "kiosk-K1", "issue", {"service": "x"}, NINE) == "unknown_service"
    assert engine.tickets == {}


def test_max_wait_alert_once(engine: Engine) -> None:
    issue(engine, "social", NINE, 1)
    assert engine.tick(NINE + 3500) == []
    alerts = engine.tick(NINE + 3700)
    assert [e.type for e in alerts] == ["alert.max_wait"]
    assert engine.tick(NINE + 3800) == []


def test_hall_state_counts_and_estimates(engine: Engine) -> None:
    for n in range(3):
        issue(engine, "social", NINE + n, n)
    call(engine, "counter-W1", NINE + 10)
    state = hall_state(engine, NINE + 11)
    social = next(s for s in state["services"] if s["id"] == "social")
    assert social["waiting"] == 2 and social["issued"] == 3 and social["prefix"] == "A"
    assert social["estimated_wait_s"] > 0
    assert state["windows"][0] == {"window": 1, "status": "serving", "ticket": "A001"}

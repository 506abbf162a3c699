"""The lease protocol under any interleaving: hypothesis drives two kiosks' offline books
(kiosk/offline.py over a real SQLite record) and the hall's real engine through issuing
online and offline, partitions, lost answers, kiosk crashes (what is on disk survives),
hall restarts (the engine rebuilt from its log) and midnights. An `issue` the kiosk gives
up on (its answer lost, or never delivered while it was cut off) is printed offline
naming that request — or nothing is printed (the lease used up, the quota, a staff
override it cannot check offline, the offline print failed) and the request is handed
over by its rid alone — and the request may still reach the hall later, before or after
the handover (paho's resend on reconnecting). Checked all along: no number is ever
printed twice, and no kiosk prints a person more tickets than the quota; at the end, once
every kiosk has rejoined and every request was delivered: every printed ticket is in the
hall's log exactly once and never voided, nothing else came from a lease, and no ticket
waits in the hall that no kiosk printed (no phantom of a given-up request, whatever was
printed for it).

Below the machine: the hall's side of a given-up request against hostile kiosks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hall.engine import ABANDONED, ABANDONED_KEPT, Engine
from hall.model import Event
from kiosk.lease import Printed
from kiosk.offline import OfflineBook
from kiosk.offline_store import OfflineStore
from quhao.config import load
from quhao.messages import (
    MAX_ABANDONED,
    MAX_HANDOVER,
    ActionRequest,
    HandoverRequest,
    LeaseRequest,
    encode,
)
from quhao.wire import MAX_PAYLOAD_BYTES, decode_object, error, ok
from quhao.wire import encode as wire_encode

BASE = load(Path(__file__).parent / "sites" / "small.toml")
# One-digit numbers: the leases fill 1…9 from the top within a few steps, so online
# numbering meets them and goes on in the next band (10…99, leased from 99 down), often.
CONFIG = BASE.model_copy(
    update={
        "devices": BASE.devices.model_copy(update={"lease_numbers": 3}),
        "rules": BASE.rules.model_copy(update={"number_width": 1}),
    }
)
WIDTH = CONFIG.rules.number_width
NINE = 1795395600.0  # 2026-11-23 09:00 in Asia/Shanghai
KIOSKS = ("kiosk-K1", "kiosk-K2")
SERVICES = ("social", "enquiry")
PEOPLE = [f"{n:064x}" for n in range(1, 5)]
STAFF = {"staff": "S001", "pin": "1111"}  # tests/sites/small.toml: may override
QUOTA = CONFIG.services["social"].quota


class Hall:
    """The hall's engine with its log and remembered answers (as hall/service.py keeps
    them: a repeated rid is answered the same and changes nothing)."""

    def __init__(self) -> None:
        self.log: list[Event] = []
        self.answers: dict[tuple[str, str], dict[str, Any]] = {}
        self.engine = Engine(CONFIG)

    def ask(self, device: str, action: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        key = (device, body["rid"])
        if key in self.answers:
            return self.answers[key]
        outcome = self.engine.handle(device, action, body, now)
        self.log += outcome.events
        answer = (
            error(body["rid"], outcome.error.code, outcome.error.message)
            if outcome.error
            else ok(body["rid"], outcome.response)
        )
        self.answers[key] = answer
        return answer

    def restart(self) -> None:
        self.engine = Engine(CONFIG)
        for event in self.log:
            self.engine.apply(event)

    def tick(self, now: float) -> None:
        self.log += self.engine.tick(now)


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = NINE
        self.hall = Hall()
        self.hall_up = True
        self.stores = {k: OfflineStore(":memory:") for k in KIOSKS}
        self.books = {k: OfflineBook(CONFIG, self.stores[k]) for k in KIOSKS}
        self.cut = dict.fromkeys(KIOSKS, False)
        self.paper: list[tuple[str, str, str, str]] = []  # (kiosk, day, number, person)
        self.offline_paper: set[str] = set()  # ticket ids printed offline
        self.sent = 0
        self.just_printed: tuple[str, str, str] | None = None  # (kiosk, rid, ticket id)
        # `issue` requests a kiosk gave up on that the broker (or paho) may still deliver
        self.in_flight: dict[str, list[dict[str, Any]]] = {k: [] for k in KIOSKS}
        self.given_up_alone = 0  # requests given up with nothing printed for them

    def reachable(self, kiosk: str) -> bool:
        return self.hall_up and not self.cut[kiosk]

    def step(self, seconds: float = 7.0) -> float:
        self.just_printed = None  # a printer fails on the ticket it is printing, or never
        self.now += seconds
        return self.now

    # ---- the kiosk's turn ---------------------------------------------------

    @rule(
        kiosk=st.sampled_from(KIOSKS),
        service=st.sampled_from(SERVICES),
        person=st.sampled_from(PEOPLE),
        answer_lost=st.booleans(),
        sent=st.booleans(),
    )
    def swipe(
        self,
        kiosk: str,
        service: str,
        person: str,
        answer_lost: bool,
        sent: bool,
        override: bool = False,
    ) -> None:
        """A citizen at a kiosk. Reachable: the hall decides, and its answer may be lost.
        Not: the kiosk may not know yet and send the `issue` (it waits in paho or at the
        broker, `sent`), or know and print at once. Either way a request given up on is
        named by the offline ticket printed instead, or handed over alone if none is
        printed, and may reach the hall later."""
        now = self.step()
        book = self.books[kiosk]
        if book.quota_before_online(service, person, now) is not None:
            return  # offline tickets the hall has not seen yet fill the quota
        body: dict[str, Any] = {"rid": f"r{self.sent}", "service": service}
        body["person"] = {"key": person}
        if override:
            body["override"] = STAFF  # beyond the quota: the hall checks the staff member
        self.sent += 1
        if self.reachable(kiosk):
            answer = self.hall.ask(kiosk, "issue", body, now)
            if not answer_lost:
                if answer["ok"]:
                    ticket = answer["ticket"]
                    book.online(service, (person, None), now)
                    self.paper.append((kiosk, ticket["id"], service, person))
                return
        elif not sent:
            body = {}  # the kiosk knew the hall unreachable: it asked nobody
        if body:
            self.in_flight[kiosk].append(body)  # paho's resend, or still on its way
        abandoned = body.get("rid")
        printed = book.issue(service, (person, None), False, override, now, abandoned)
        if isinstance(printed, Printed):
            number = CONFIG.services[service].prefix + f"{printed.number:0{WIDTH}d}"
            ticket_id = f"{printed.day}/{number}"
            self.paper.append((kiosk, ticket_id, service, person))
            self.offline_paper.add(ticket_id)
            self.just_printed = (kiosk, printed.rid, ticket_id)
        elif abandoned is not None:  # nothing printed: on disk to hand over alone
            assert abandoned in book.leases.abandoned
            self.given_up_alone += 1

    @rule(
        kiosk=st.sampled_from(KIOSKS),
        service=st.sampled_from(SERVICES),
        person=st.sampled_from(PEOPLE),
    )
    def lost_answer(self, kiosk: str, service: str, person: str) -> None:
        """The race itself, more often than `swipe` draws it: the hall issues online, the
        answer never arrives, the kiosk prints offline naming the request."""
        self.swipe(kiosk, service, person, answer_lost=True, sent=True)

    @rule(kiosk=st.sampled_from(KIOSKS), person=st.sampled_from(PEOPLE))
    def override_given_up(self, kiosk: str, person: str) -> None:
        """A staff override whose answer is lost (or never delivered): the kiosk cannot
        prove the staff member offline, so it prints nothing; the hall may have issued."""
        self.swipe(kiosk, "social", person, answer_lost=True, sent=True, override=True)

    @precondition(lambda self: any(self.in_flight.values()))
    @rule(kiosk=st.sampled_from(KIOSKS))
    def late_delivery(self, kiosk: str) -> None:
        """The hall gets an `issue` the kiosk gave up on: before its handover (an online
        ticket nobody holds, until the handover voids it) or after (refused)."""
        if self.in_flight[kiosk] and self.reachable(kiosk):
            body = self.in_flight[kiosk].pop(0)
            self.hall.ask(kiosk, "issue", body, self.step(1.0))  # the kiosk drops the answer

    @rule(kiosk=st.sampled_from(KIOSKS), answer_lost=st.booleans())
    def sync(self, kiosk: str, answer_lost: bool) -> None:
        """One step of the lease protocol (hand over, release, lease), if the hall can
        be reached; a lost answer is a timeout to the kiosk."""
        self.sync_once(kiosk, answer_lost)

    def sync_once(self, kiosk: str, answer_lost: bool = False) -> bool:
        now = self.step(1.0)
        book = self.books[kiosk]
        request = book.next_request(now, SERVICES)
        if request is None or not self.reachable(kiosk):
            return False
        answer = self.send(kiosk, request, now)
        if not answer_lost:
            book.answered(request, answer, now)
        return True

    def send(self, kiosk: str, request: ActionRequest, now: float) -> dict[str, Any]:
        body = encode(request)
        body["rid"] = f"s{self.sent}"
        self.sent += 1
        return self.hall.ask(kiosk, request.action, body, now)

    @precondition(lambda self: self.just_printed is not None)
    @rule()
    def printer_fails(self) -> None:
        """The printer failed on the offline ticket just taken: it is voided."""
        assert self.just_printed is not None
        kiosk, rid, ticket_id = self.just_printed
        abandoned = self.books[kiosk].leases.printed[rid].abandoned_rid
        self.books[kiosk].voided(rid)
        if abandoned is not None:  # its request now goes over alone
            assert abandoned in self.books[kiosk].leases.abandoned
            self.given_up_alone += 1
        self.paper = [p for p in self.paper if p[1] != ticket_id]
        self.offline_paper.discard(ticket_id)
        self.just_printed = None

    @rule(kiosk=st.sampled_from(KIOSKS))
    def kiosk_restarts(self, kiosk: str) -> None:
        self.just_printed = None
        self.books[kiosk] = OfflineBook(CONFIG, self.stores[kiosk])  # memory lost, disk kept

    # ---- the network and the hall -------------------------------------------

    @rule(kiosk=st.sampled_from(KIOSKS))
    def cut_off(self, kiosk: str) -> None:
        self.cut[kiosk] = True

    @rule(kiosk=st.sampled_from(KIOSKS))
    def rejoin(self, kiosk: str) -> None:
        self.cut[kiosk] = False

    @rule()
    def hall_dies(self) -> None:
        self.hall_up = False

    @rule()
    def hall_restarts(self) -> None:
        self.hall.restart()
        self.hall_up = True

    @precondition(lambda self: self.now < NINE + 6 * 86400)  # the hall keeps leases a week
    @rule(hours=st.sampled_from([1, 3, 15]))
    def time_passes(self, hours: int) -> None:
        """An hour, a few, or past midnight: leases are for one day."""
        self.hall.tick(self.step(hours * 3600))

    # ---- what must always hold ----------------------------------------------

    @invariant()
    def no_number_printed_twice(self) -> None:
        ids = Counter(ticket_id for _, ticket_id, _, _ in self.paper)
        assert not [t for t, n in ids.items() if n > 1], ids

    @invariant()
    def online_numbers_contiguous_until_a_lease(self) -> None:
        """Online numbers count up from 1 without a gap but for leased numbers, and no
        block is ever leased twice or below a number already issued online."""
        online: dict[tuple[str, str], set[int]] = {}
        leased: dict[tuple[str, str], set[int]] = {}
        for e in self.hall.log:
            key = (e.data.get("day", ""), e.data.get("service", ""))
            if e.type == "ticket.issued" and not e.data.get("offline"):
                online.setdefault(key, set()).add(int(e.data["number"][1:]))
            elif e.type == "lease.granted":
                block = set(range(e.data["first"], e.data["last"] + 1))
                taken = leased.setdefault(key, set())
                assert not block & taken, ("leased twice", e.data)
                assert max(online.get(key, {0})) < e.data["first"], ("below online", e.data)
                taken |= block
        for key, numbers in online.items():
            gaps = set(range(1, max(numbers) + 1)) - numbers - leased.get(key, set())
            assert not gaps, (key, sorted(gaps))

    @invariant()
    def quota_kept_at_each_kiosk(self) -> None:
        assert QUOTA is not None
        for kiosk in KIOSKS:
            per_person: dict[str, list[float]] = {}
            for p in self.books[kiosk].leases.printed.values():
                if p.service == "social" and p.state != "voided" and p.person_key:
                    per_person.setdefault(p.person_key, []).append(p.issued_at)
            for at_list in per_person.values():
                at_list.sort()
                for i, start in enumerate(at_list):
                    within = [a for a in at_list[i:] if a - start < QUOTA.seconds]
                    assert len(within) <= QUOTA.tickets, (kiosk, at_list)

    def teardown(self) -> None:
        """Everyone rejoins: every printed ticket ends in the hall's log exactly once, and
        no ticket waits that nobody printed, even with every given-up request delivered
        after the handovers, whether an offline ticket names it or nothing was printed."""
        self.hall.restart()
        self.hall_up = True
        for kiosk in KIOSKS:
            self.cut[kiosk] = False
            for _ in range(200):
                if not self.sync_once(kiosk):
                    break
            assert self.books[kiosk].to_hand_over() == 0
            assert self.books[kiosk].given_up() == 0  # acknowledged: forgotten at the kiosk
        for kiosk in KIOSKS:
            for body in self.in_flight[kiosk]:
                answer = self.hall.ask(kiosk, "issue", body, self.step(1.0))
                ticket = self.hall.engine.tickets.get(answer.get("ticket", {}).get("id", ""))
                assert ticket is None or ticket.status.value != "waiting", answer
        issued = Counter(e.data["ticket"] for e in self.hall.log if e.type == "ticket.issued")
        for _, ticket_id, _, _ in self.paper:
            assert issued[ticket_id] == 1, ticket_id
        on_paper = {ticket_id for _, ticket_id, _, _ in self.paper}
        voided = {e.data["ticket"] for e in self.hall.log if e.type == "ticket.voided"}
        assert not on_paper & voided, "a printed ticket was voided"
        phantoms = [
            t
            for t in self.hall.engine.tickets.values()
            if t.status.value == "waiting" and t.id not in on_paper
        ]
        assert not phantoms, phantoms
        remembered = sum(len(rids) for rids in self.hall.engine.abandoned.values())
        assert remembered <= self.given_up_alone  # only what a kiosk gave up, at most once
        from_leases = {
            e.data["ticket"]
            for e in self.hall.log
            if e.type == "ticket.issued" and e.data.get("offline")
        }
        assert from_leases == self.offline_paper
        assert not [e for e in self.hall.log if e.type == "alert.lease_breach"]


LeaseMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLeaseProperties = pytest.mark.long(LeaseMachine.TestCase)


# ---- a given-up `issue` at the hall: both orders, and hostile kiosks ------------------

KEY = PEOPLE[0]


def _issue(engine: Engine, kiosk: str, rid: str, at: float, key: str = KEY) -> Any:
    body = {"rid": rid, "service": "social", "person": {"key": key}}
    return engine.handle(kiosk, "issue", body, at)


def _lease(engine: Engine, kiosk: str, at: float) -> dict[str, Any]:
    outcome = engine.handle(kiosk, "lease", {"rid": f"lease-{at}", "service": "social"}, at)
    assert outcome.error is None, outcome.error
    lease: dict[str, Any] = outcome.response["lease"]
    return lease


def _handover(engine: Engine, kiosk: str, tickets: list[dict[str, Any]], at: float) -> Any:
    return engine.handle(kiosk, "handover", {"rid": f"h-{at}", "tickets": tickets}, at)


def _offline(number: int, at: float, **extra: Any) -> dict[str, Any]:
    ticket = {"rid": f"o-{number}", "service": "social", "number": number, "issued_at": at}
    return {**ticket, "person": {"key": KEY}, **extra}


def test_a_lost_answer_is_voided_by_the_handover_and_gives_the_quota_back() -> None:
    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    assert _issue(engine, "kiosk-K1", "held", NINE + 1).error is None  # on paper
    phantom = _issue(engine, "kiosk-K1", "lost", NINE + 2).response["ticket"]  # answer lost
    # The kiosk printed offline instead; the person holds two tickets, the quota.
    handed = _handover(
        engine, "kiosk-K1", [_offline(lease["last"], NINE + 8, abandoned_rid="lost")], NINE + 60
    )
    [placed] = handed.response["tickets"]
    assert placed["superseded"] == {"id": phantom["id"], "number": phantom["number"]} | {
        "voided": True
    }
    [void] = [e for e in handed.events if e.type == "ticket.voided"]
    assert void.data == {
        "ticket": phantom["id"],
        "kiosk": "kiosk-K1",
        "reason": f"superseded by offline ticket {placed['number']}",
        "superseded_by": placed["id"],
    }
    assert engine.tickets[phantom["id"]].status.value == "voided"
    assert not [e for e in handed.events if e.type == "alert.quota_breach"]  # not counted
    queue = engine.queues[("2026-11-23", "social", False)]
    assert phantom["id"] not in [tid for _, _, tid in queue]
    refused = _issue(engine, "kiosk-K1", "third", NINE + 70)
    assert refused.error is not None and refused.error.code == "quota_exceeded"


def test_a_request_arriving_after_the_handover_is_refused_superseded_after_a_restart() -> None:
    from hall.snapshot import restore, snapshot

    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    _handover(
        engine, "kiosk-K1", [_offline(lease["last"], NINE + 5, abandoned_rid="late")], NINE + 9
    )
    again = restore(CONFIG, None, snapshot(engine))  # the memory is the ticket's: durable
    late = _issue(again, "kiosk-K1", "late", NINE + 30)
    assert late.error is not None and late.error.code == "superseded"
    assert late.events == []
    assert lease["last"] == 9 and "A9" in late.error.message
    other = _issue(again, "kiosk-K2", "late", NINE + 31)  # another kiosk's rid: its own
    assert other.error is None


def test_an_online_ticket_already_called_is_not_voided() -> None:
    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    phantom = _issue(engine, "kiosk-K1", "lost", NINE + 1).response["ticket"]
    engine.handle("counter-W1", "login", {"staff": "S001", "pin": "1111"}, NINE + 2)
    called = engine.handle("counter-W1", "call", {}, NINE + 3)
    assert called.response["ticket"]["id"] == phantom["id"]
    handed = _handover(
        engine, "kiosk-K1", [_offline(lease["last"], NINE + 2, abandoned_rid="lost")], NINE + 9
    )
    assert handed.response["tickets"][0]["superseded"]["voided"] is False
    assert not [e for e in handed.events if e.type == "ticket.voided"]
    assert engine.tickets[phantom["id"]].status.value == "called"


def test_a_handover_cannot_void_another_kiosks_ticket() -> None:
    engine = Engine(CONFIG)
    theirs = _issue(engine, "kiosk-K1", "shared-rid", NINE).response["ticket"]
    lease = _lease(engine, "kiosk-K2", NINE + 1)
    handed = _handover(
        engine,
        "kiosk-K2",
        [_offline(lease["last"], NINE + 2, abandoned_rid="shared-rid")],
        NINE + 3,
    )
    assert handed.response["tickets"][0]["placed"] is True
    assert "superseded" not in handed.response["tickets"][0]
    assert not [e for e in handed.events if e.type == "ticket.voided"]
    assert engine.tickets[theirs["id"]].status.value == "waiting"


@pytest.mark.parametrize("rid", ["", "x" * 129, 5, ["r"], {"rid": "r"}])
def test_a_malformed_abandoned_rid_is_a_bad_request(rid: Any) -> None:
    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    outcome = _handover(
        engine, "kiosk-K1", [_offline(lease["last"], NINE, abandoned_rid=rid)], NINE
    )
    assert outcome.error is not None and outcome.error.code == "bad_request", outcome.error
    assert "abandoned_rid" in outcome.error.message and outcome.events == []


def test_a_flood_of_handovers_with_random_rids_stays_bounded() -> None:
    """Only a ticket placed from the kiosk's own lease is remembered with its abandoned
    rid, once: the memory is bounded by the numbers leased to that kiosk."""
    import random

    rng = random.Random(15)
    engine = Engine(CONFIG)
    victim = _issue(engine, "kiosk-K2", "r-victim", NINE).response["ticket"]
    _lease(engine, "kiosk-K1", NINE)
    for n in range(200):
        tickets = [
            _offline(rng.randint(1, 99), NINE + n, abandoned_rid=f"{rng.getrandbits(64):x}")
            | {"rid": f"{rng.getrandbits(64):x}"}
            for _ in range(50)
        ]
        _handover(engine, "kiosk-K1", tickets, NINE + n + 1)
    mine = [key for key in engine.by_request if key[0] == "kiosk-K1"]
    assert len(mine) <= CONFIG.devices.lease_numbers
    assert engine.tickets[victim["id"]].status.value == "waiting"
    assert not [t for t in engine.tickets.values() if t.status.value == "voided"]


def test_an_offline_appointment_needs_a_booking_the_hall_can_see() -> None:
    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    booked = {"person_key": KEY, "service": "social", "start": NINE + 600, "end": NINE + 2400}
    imported = engine.handle(
        "office", "appointment_import", {"rid": "i", "bookings": [{**booked, "ref": "WB-1"}]}, NINE
    )
    assert imported.error is None, imported.error
    stranger = {"key": PEOPLE[1]}
    handed = _handover(
        engine,
        "kiosk-K1",
        [
            _offline(lease["last"], NINE + 300, priority="appointment"),  # booked, in window
            _offline(lease["last"] - 1, NINE + 301, priority="appointment", person=stranger),
        ],
        NINE + 400,
    )
    booked_ticket, stranger_ticket = (engine.tickets[t["id"]] for t in handed.response["tickets"])
    assert booked_ticket.priority == "appointment"
    assert stranger_ticket.priority is None  # the kiosk's word alone gives no lane
    [checkin] = [e for e in handed.events if e.type == "appointment.checked_in"]
    assert checkin.data["ticket"] == booked_ticket.id


def test_the_kiosk_keeps_the_abandoned_rid_on_disk_and_reads_an_older_record(
    tmp_path: Path,
) -> None:
    """Written before the ticket prints, read back after a restart, handed over; a record
    from before abandoned rids were kept gains the column and still loads."""
    import sqlite3

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute(
            "CREATE TABLE printed (rid TEXT PRIMARY KEY, day TEXT NOT NULL, service TEXT NOT "
            "NULL, number INTEGER, issued_at REAL NOT NULL, person_key TEXT, age INTEGER, "
            "priority TEXT, state TEXT NOT NULL, UNIQUE (day, service, number))"
        )
        db.execute(
            "INSERT INTO printed VALUES ('before', '2026-11-23', 'social', 9, ?, NULL, NULL, "
            "NULL, 'issued')",
            (NINE,),
        )
    [before] = OfflineStore(old).printed()
    assert before.abandoned_rid is None
    store = OfflineStore(tmp_path / "kiosk.sqlite")
    book = OfflineBook(CONFIG, store)
    asked = book.next_request(NINE, ("social",))
    assert isinstance(asked, LeaseRequest)
    grant = ok("g", {"lease": {"day": "2026-11-23", "service": "social", "first": 7, "last": 9}})
    book.answered(asked, grant, NINE)
    printed = book.issue("social", (KEY, 40), False, False, NINE + 1, "the-lost-issue")
    assert isinstance(printed, Printed)
    store.close()
    again = OfflineBook(CONFIG, OfflineStore(tmp_path / "kiosk.sqlite"))  # a restart
    request = again.next_request(NINE + 2, ("social",))
    assert request is not None
    assert encode(request)["tickets"][0]["abandoned_rid"] == "the-lost-issue"


def test_rids_and_superseding_stay_in_the_hall() -> None:
    """The feed to the city carries neither a ticket's rids nor why it was voided, nor a
    given-up request's rid."""
    from hall.feed import supervision_event

    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    issued = _issue(engine, "kiosk-K1", "lost", NINE + 1).events
    handed = _handover(
        engine, "kiosk-K1", [_offline(lease["last"], NINE + 2, abandoned_rid="lost")], NINE + 3
    ).events
    _issue(engine, "kiosk-K1", "alone", NINE + 4)
    alone = _give_up(engine, "kiosk-K1", ["alone"], NINE + 5).events
    assert {e.type for e in alone} == {"request.abandoned", "ticket.voided"}
    for event in issued + handed + alone:
        left = supervision_event(1, event.at, event.type, event.data)["data"]
        assert not {"rid", "abandoned_rid", "reason", "superseded_by"} & set(left), left
        if event.type == "request.abandoned":
            assert left == {}  # its type alone: the hall's own business


def test_a_given_up_checkin_is_superseded_like_an_issue() -> None:
    """A check-in is an issue too: its appointment ticket, answer lost, is voided by the
    offline ticket the kiosk printed for that person next; a late one is refused."""
    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    booked = {"person_key": KEY, "service": "social", "start": NINE + 600, "end": NINE + 2400}
    for ref, start in (("WB-1", NINE + 600), ("WB-2", NINE + 900)):
        booking = {**booked, "ref": ref, "start": start}
        engine.handle("office", "appointment_import", {"rid": ref, "bookings": [booking]}, NINE)
    lost = engine.handle("kiosk-K1", "checkin", {"rid": "c-1", "person": {"key": KEY}}, NINE + 1)
    phantom = lost.response["ticket"]
    assert phantom["priority"] == "appointment"
    handed = _handover(
        engine,
        "kiosk-K1",
        [
            _offline(lease["last"], NINE + 5, abandoned_rid="c-1"),
            _offline(lease["last"] - 1, NINE + 6, abandoned_rid="c-2"),
        ],
        NINE + 9,
    )
    assert handed.response["tickets"][0]["superseded"]["id"] == phantom["id"]
    assert engine.tickets[phantom["id"]].status.value == "voided"
    late = engine.handle("kiosk-K1", "checkin", {"rid": "c-2", "person": {"key": KEY}}, NINE + 10)
    assert late.error is not None and late.error.code == "superseded", late.error


# ---- a request given up with nothing printed, handed over by its rid alone -------------


def _give_up(engine: Engine, kiosk: str, rids: Any, at: float, **more: Any) -> Any:
    return engine.handle(kiosk, "handover", {"rid": f"g-{at}", "abandoned": rids, **more}, at)


def test_a_request_given_up_alone_voids_its_ticket_and_gives_the_quota_back() -> None:
    """The kiosk printed nothing for it (no lease left, an override, a failed print): the
    online ticket issued for it, answer lost, is voided; a repeated handover is one."""
    engine = Engine(CONFIG)
    assert _issue(engine, "kiosk-K1", "held", NINE).error is None  # on paper
    phantom = _issue(engine, "kiosk-K1", "lost", NINE + 1).response["ticket"]  # answer lost
    handed = _give_up(engine, "kiosk-K1", ["lost"], NINE + 60)
    assert handed.response == {
        "tickets": [],
        "refused": [],
        "abandoned": [
            {"rid": "lost", "superseded": {"id": phantom["id"], "number": "A2", "voided": True}}
        ],
    }
    assert [(e.type, e.data) for e in handed.events] == [
        ("request.abandoned", {"kiosk": "kiosk-K1", "rid": "lost", "day": "2026-11-23"}),
        ("ticket.voided", {"ticket": phantom["id"], "kiosk": "kiosk-K1", "reason": ABANDONED}),
    ]
    queue = engine.queues[("2026-11-23", "social", False)]
    assert phantom["id"] not in [tid for _, _, tid in queue]
    assert _issue(engine, "kiosk-K1", "next", NINE + 70).error is None  # the quota is back
    again = _give_up(engine, "kiosk-K1", ["lost", "lost"], NINE + 80)  # its answer was lost
    assert again.events == [] and again.response["abandoned"] == handed.response["abandoned"]


def test_a_request_given_up_alone_and_arriving_later_is_refused_after_restart_and_replay() -> None:
    from hall.snapshot import decode, encode, restore, snapshot

    engine = Engine(CONFIG)
    log = _give_up(engine, "kiosk-K1", ["late"], NINE).events
    assert [e.type for e in log] == ["request.abandoned"]  # nothing issued for it yet
    replayed = Engine(CONFIG)
    for event in log:
        replayed.apply(event)
    restored = restore(CONFIG, None, decode(encode(snapshot(engine))))
    for hall in (engine, replayed, restored):
        late = _issue(hall, "kiosk-K1", "late", NINE + 30)  # paho's resend on reconnecting
        assert late.error is not None and late.error.code == "superseded", late.error
        assert late.events == []
        checkin = hall.handle("kiosk-K1", "checkin", {"rid": "late", "person": {"key": KEY}}, NINE)
        assert checkin.error is not None and checkin.error.code == "superseded"
    assert _issue(engine, "kiosk-K2", "late", NINE + 31).error is None  # K2's own rid


def test_a_ticket_already_called_stands_and_another_kiosks_rid_voids_nothing() -> None:
    engine = Engine(CONFIG)
    called = _issue(engine, "kiosk-K1", "called", NINE).response["ticket"]
    theirs = _issue(engine, "kiosk-K1", "k1-rid", NINE + 1, PEOPLE[1]).response["ticket"]
    engine.handle("counter-W1", "login", {"staff": "S001", "pin": "1111"}, NINE + 2)
    assert (
        engine.handle("counter-W1", "call", {}, NINE + 3).response["ticket"]["id"] == called["id"]
    )
    mine = _give_up(engine, "kiosk-K1", ["called"], NINE + 4)
    assert mine.response["abandoned"][0]["superseded"]["voided"] is False
    assert [e.type for e in mine.events] == ["request.abandoned"]
    assert engine.tickets[called["id"]].status.value == "called"  # someone answered the call
    foreign = _give_up(engine, "kiosk-K2", ["k1-rid", "called"], NINE + 5)
    assert [a for a in foreign.response["abandoned"] if "superseded" in a] == []
    assert not [e for e in foreign.events if e.type == "ticket.voided"]
    assert engine.tickets[theirs["id"]].status.value == "waiting"
    assert set(engine.abandoned) == {"kiosk-K1", "kiosk-K2"}  # each remembers its own


def test_given_up_requests_are_placed_before_the_tickets_handed_over_with_them() -> None:
    """A failed offline print: the request it named goes alone, the person's next
    offline ticket with it; the voided phantom no longer counts against the quota."""
    engine = Engine(CONFIG)
    lease = _lease(engine, "kiosk-K1", NINE)
    assert _issue(engine, "kiosk-K1", "held", NINE + 1).error is None
    phantom = _issue(engine, "kiosk-K1", "lost", NINE + 2).response["ticket"]
    ticket = _offline(lease["last"] - 1, NINE + 9)  # printed after the voided one
    handed = _give_up(engine, "kiosk-K1", ["lost"], NINE + 60, tickets=[ticket])
    assert handed.response["tickets"][0]["placed"] is True
    assert engine.tickets[phantom["id"]].status.value == "voided"
    assert not [e for e in handed.events if e.type == "alert.quota_breach"]


@pytest.mark.parametrize(
    "rids",
    ["lost", [""], ["x" * 129], [5], [["r"]], [{"rid": "r"}], [f"r{n}" for n in range(65)]],
)
def test_a_malformed_or_oversized_abandoned_list_is_a_bad_request(rids: Any) -> None:
    engine = Engine(CONFIG)
    phantom = _issue(engine, "kiosk-K1", "r1", NINE).response["ticket"]
    outcome = _give_up(engine, "kiosk-K1", rids, NINE + 1)
    assert outcome.error is not None and outcome.error.code == "bad_request", outcome.error
    assert "abandoned" in outcome.error.message and outcome.events == []
    assert engine.abandoned == {} and engine.tickets[phantom["id"]].status.value == "waiting"


def test_a_flood_of_given_up_rids_stays_bounded_and_forgets_the_oldest() -> None:
    import random

    rng = random.Random(15)
    engine = Engine(CONFIG)
    victim = _issue(engine, "kiosk-K2", "r-victim", NINE).response["ticket"]
    sent = [f"{rng.getrandbits(64):x}" for _ in range(ABANDONED_KEPT + 5 * MAX_ABANDONED)]
    for n in range(0, len(sent), MAX_ABANDONED):
        assert _give_up(engine, "kiosk-K1", sent[n : n + MAX_ABANDONED], NINE + n).error is None
    _give_up(engine, "kiosk-K1", ["r-victim"], NINE + 9999)  # K2's: voids nothing
    kept = engine.abandoned["kiosk-K1"]
    assert len(kept) == ABANDONED_KEPT and list(kept)[-1] == "r-victim"
    assert list(kept)[:-1] == sent[-(ABANDONED_KEPT - 1) :]  # the newest, in order
    assert engine.tickets[victim["id"]].status.value == "waiting"


def test_given_up_requests_are_forgotten_a_week_after_their_day() -> None:
    engine = Engine(CONFIG)
    _give_up(engine, "kiosk-K1", ["old"], NINE)
    day = 86400
    for days in (1, 8):  # a ticket each day, so the day's archiving comes
        _issue(engine, "kiosk-K2", f"r{days}", NINE + days * day, PEOPLE[days % 4])
        engine.tick(NINE + days * day + 60)
    assert "old" in engine.abandoned["kiosk-K1"]  # 2026-11-23 is within the week still
    engine.tick(NINE + 10 * day)
    assert engine.abandoned == {}
    assert _issue(engine, "kiosk-K1", "old", NINE + 10 * day).error is None


def test_the_kiosk_keeps_a_request_given_up_alone_on_disk_until_the_hall_takes_it(
    tmp_path: Path,
) -> None:
    """Nothing printed (no lease left; an override; a print that failed): the rid is on
    disk when `issue` returns or the void is recorded, survives a restart, goes over in a
    handover with or without tickets, and is forgotten once the hall answered it; an
    offline ticket naming a given-up check-in takes it over."""
    path = tmp_path / "kiosk.sqlite"
    book = OfflineBook(CONFIG, OfflineStore(path))
    refused = book.issue("social", (KEY, 40), False, False, NINE, "no-lease")
    assert not isinstance(refused, Printed) and refused.code == "no_lease"
    override = book.issue("social", (KEY, 40), False, True, NINE + 1, "override")
    assert not isinstance(override, Printed) and override.code == "override"
    book.abandon("checkin", NINE + 2)  # a check-in given up: the person may choose a service
    assert [rid for rid, _ in OfflineStore(path).abandoned()] == ["no-lease", "override", "checkin"]
    grant = ok("g", {"lease": {"day": "2026-11-23", "service": "social", "first": 7, "last": 9}})
    book.answered(LeaseRequest(service="social"), grant, NINE)
    failed = book.issue("social", (KEY, 40), False, False, NINE + 3, "failed-print")
    assert isinstance(failed, Printed)
    book.voided(failed.rid)  # the printer failed: the request it named goes alone
    named = book.issue("social", (KEY, 40), False, False, NINE + 4, "checkin")
    assert isinstance(named, Printed)  # this ticket names the check-in now
    book.abandon("checkin", NINE + 5)  # and a second word about it changes nothing
    again = OfflineBook(CONFIG, OfflineStore(path))  # a restart
    assert again.given_up() == 3
    request = again.next_request(NINE + 6, ("social",))
    assert isinstance(request, HandoverRequest)
    assert request.abandoned == ["no-lease", "override", "failed-print"]
    assert [t.abandoned_rid for t in request.tickets] == ["checkin"]
    answer = {"tickets": [], "refused": [], "abandoned": []}
    again.answered(request, error("h", "unavailable", "retry"), NINE + 7)
    assert again.given_up() == 3  # not taken: kept
    again.answered(request, ok("h", answer), NINE + 7)
    assert again.given_up() == 0 and OfflineStore(path).abandoned() == []


def test_a_handover_fits_the_halls_request_size_however_much_waits(tmp_path: Path) -> None:
    """A long outage leaves more than one request holds (8 KB): the oldest go first, the
    rest with the next; each request is decoded by the hall."""
    big = CONFIG.model_copy(
        update={"devices": CONFIG.devices.model_copy(update={"lease_numbers": 200})}
    )
    book = OfflineBook(big, OfflineStore(tmp_path / "kiosk.sqlite"))
    grant = ok("g", {"lease": {"day": "2026-11-23", "service": "social", "first": 1, "last": 99}})
    book.answered(LeaseRequest(service="social"), grant, NINE)
    for n in range(60):
        person = (f"{n:064x}", 40)
        book.issue("social", person, False, False, NINE + n, f"{n:032x}")  # lost answers
        book.abandon(f"{n + 1000:0128x}", NINE + n)  # the longest rids a hall takes
    batches = []
    while isinstance(request := book.next_request(NINE + 100, ("social",)), HandoverRequest):
        body = encode(request) | {"rid": "f" * 32}
        assert len(wire_encode(body)) <= MAX_PAYLOAD_BYTES
        assert decode_object(wire_encode(body))  # the hall takes it in
        batches.append((len(request.tickets), len(request.abandoned)))
        taken = [{"rid": t.rid} for t in request.tickets]
        book.answered(request, ok("h", {"tickets": taken, "refused": [], "abandoned": []}), NINE)
    assert sum(t for t, _ in batches) == 60 and sum(a for _, a in batches) == 60
    assert len(batches) > 2 and batches[0][0] < MAX_HANDOVER  # cut by bytes, not by count

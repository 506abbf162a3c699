"""The lease protocol under any interleaving: hypothesis drives two kiosks' offline books
(kiosk/offline.py over a real SQLite record) and the hall's real engine through issuing
online and offline, partitions, lost answers, kiosk crashes (what is on disk survives),
hall restarts (the engine rebuilt from its log) and midnights. Checked all along: no
number is ever printed twice, and no kiosk prints a person more tickets than the quota;
at the end, once every kiosk has rejoined: every printed ticket is in the hall's log
exactly once, and nothing else came from a lease."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hall.engine import Engine
from hall.model import Event
from kiosk.lease import Printed
from kiosk.offline import OfflineBook
from kiosk.offline_store import OfflineStore
from quhao.config import load
from quhao.messages import ActionRequest, encode
from quhao.wire import error, ok

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
    )
    def swipe(self, kiosk: str, service: str, person: str, answer_lost: bool) -> None:
        now = self.step()
        book = self.books[kiosk]
        if book.quota_before_online(service, person, now) is not None:
            return  # offline tickets the hall has not seen yet fill the quota
        if self.reachable(kiosk):
            body = {"rid": f"r{self.sent}", "service": service, "person": {"key": person}}
            self.sent += 1
            answer = self.hall.ask(kiosk, "issue", body, now)
            if not answer_lost:
                if answer["ok"]:
                    ticket = answer["ticket"]
                    book.online(service, (person, None), now)
                    self.paper.append((kiosk, ticket["id"], service, person))
                return
        printed = book.issue(service, (person, None), False, False, now)
        if isinstance(printed, Printed):
            number = CONFIG.services[service].prefix + f"{printed.number:0{WIDTH}d}"
            ticket_id = f"{printed.day}/{number}"
            self.paper.append((kiosk, ticket_id, service, person))
            self.offline_paper.add(ticket_id)
            self.just_printed = (kiosk, printed.rid, ticket_id)

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
        self.books[kiosk].voided(rid)
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
        """Everyone rejoins: every printed ticket ends in the hall's log exactly once."""
        self.hall.restart()
        self.hall_up = True
        for kiosk in KIOSKS:
            self.cut[kiosk] = False
            for _ in range(200):
                if not self.sync_once(kiosk):
                    break
            assert self.books[kiosk].to_hand_over() == 0
        issued = Counter(e.data["ticket"] for e in self.hall.log if e.type == "ticket.issued")
        for _, ticket_id, _, _ in self.paper:
            assert issued[ticket_id] == 1, ticket_id
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

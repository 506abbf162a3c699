"""Stateful property test of the queue engine over random sequences of every action.

Invariants checked after every step:
- no duplicate number per day and numbering service;
- no ticket at two terminals, no terminal with a ticket that is not called;
- every issued ticket exists in one of the five states, and the waiting ones are
  exactly the queued ones — none vanishes;
- no ticket is called twice without first going back to waiting;
- the quota is never exceeded without a staff override;
- the anti-starvation interleave holds;
- replaying the event log rebuilds exactly the same state;
- a snapshot (taken at any step, through JSON and zlib) plus the events after it gives
  exactly the same state as well, and so does a snapshot of the state just reached;
- archiving drops only settled tickets of days before yesterday;
- after person keys are erased (retention), neither the state nor a snapshot kept
  holds one of them, and a kept snapshot rewritten without them still gives exactly the
  state of a full replay of the erased log.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as label
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hall.engine import SETTLED, Engine
from hall.model import Event, Status
from hall.snapshot import (
    decode,
    encode,
    forget_person_keys,
    person_keys_since,
    restore,
    snapshot,
)
from quhao.config import load

CONFIG = load(Path(__file__).parent / "sites" / "small.toml")
TERMINALS = list(CONFIG.counters)
KIOSKS = list(CONFIG.kiosks)
SERVICES = [*CONFIG.services, "nope"]
PERSONS = [f"{i:02x}" * 16 for i in range(6)]
PINS = {"S001": "1111", "S002": "2222"}  # tests/sites/small.toml
OVERRIDES = {
    "S001": {"staff": "S001", "pin": "1111"},  # may override: proven by PIN
    "S001-forged": {"staff": "S001"},  # named without proof: must be refused
    "S002": {"staff": "S002", "pin": "2222"},  # proven, but without the right
}
START = datetime(2026, 11, 23, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


class EngineMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.engine = Engine(CONFIG)
        self.now = START
        self.log: list[Event] = []
        self.issued_ids: set[str] = set()
        self.archived: set[str] = set()
        # the log folded into a fresh engine, and into the engine restored from a snapshot
        self.replayed, self.replayed_upto = Engine(CONFIG), 0
        self.stored: tuple[bytes, int, float | None] | None = None  # blob, log length, keys
        self.restored: Engine | None = None
        self.restored_upto = 0
        self.numbers: set[tuple[str, str, str]] = set()
        self.streak = dict.fromkeys(TERMINALS, 0)

    def _do(self, device: str, action: str, payload: dict) -> dict | None:
        before = {tid: t.status for tid, t in self.engine.tickets.items()}
        outcome = self.engine.handle(device, action, payload, self.now)
        for event in outcome.events:
            self.log.append(event)
            if event.type == "ticket.called":
                assert before[event.data["ticket"]] == Status.WAITING, "called twice"
                before[event.data["ticket"]] = Status.CALLED
            if event.type == "ticket.finished":
                before[event.data["ticket"]] = Status.FINISHED
        return None if outcome.error else outcome.response

    # ---- rules ------------------------------------------------------------

    @rule(seconds=st.one_of(st.integers(1, 900), st.just(7200), st.just(40000)))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @rule(
        kiosk=st.sampled_from(KIOSKS),
        service=st.sampled_from(SERVICES),
        person=st.one_of(st.none(), st.sampled_from(PERSONS)),
        age=st.integers(20, 90),
        priority=st.sampled_from([None, None, "appointment", "green", "vip"]),
        override=st.sampled_from([None, None, None, "S001", "S001-forged", "S002"]),
    )
    def issue(self, kiosk, service, person, age, priority, override) -> None:
        self._issue(kiosk, service, person, age, priority, override)

    def _issue(self, kiosk, service, person, age, priority, override) -> None:
        held = 0
        if person is not None and service in CONFIG.services and CONFIG.services[service].quota:
            quota = CONFIG.services[service].quota
            held = sum(
                1
                for t in self.engine.tickets.values()
                if t.person_key == person
                and t.origin_service == service
                and self.now - t.issued_at < quota.seconds
                and t.status != Status.VOIDED
            )
        payload = {
            "service": service,
            "person": {"key": person, "age": age} if person else None,
            "priority": priority,
            "override": OVERRIDES[override] if override else None,
        }
        response = self._do(kiosk, "issue", payload)
        if response is None:
            return
        ticket = response["ticket"]
        assert ticket["id"] not in self.issued_ids, "a ticket id was given twice"
        self.issued_ids.add(ticket["id"])
        key = (ticket["id"].split("/")[0], service, ticket["number"])
        assert key not in self.numbers, "a number was given twice"
        self.numbers.add(key)
        quota = CONFIG.services[service].quota
        if person is not None and quota and override != "S001":
            assert held < quota.tickets, "quota exceeded without a proven override"
        if ticket["priority"] == "green":
            assert override == "S001", "green channel without proven staff authority"

    @rule(ages=st.lists(st.sampled_from([30, 70]), min_size=2, max_size=5))
    def crowd(self, ages) -> None:
        """A burst of ordinary and elderly citizens: makes priority and ordinary meet."""
        for i, age in enumerate(ages):
            self._issue(KIOSKS[i % 2], "social", f"{i + 10:02x}" * 16, age, None, None)
        self.now += 1

    @rule(
        kiosk=st.sampled_from(KIOSKS),
        service=st.sampled_from(SERVICES),
        person=st.sampled_from(PERSONS),
        issued=st.booleans(),
        rids=st.lists(st.sampled_from(["r1", "r2", "r3", "r4"]), max_size=3),
    )
    def give_up(self, kiosk, service, person, issued, rids) -> None:
        """A kiosk gives an `issue` up (the hall may have got it: its answer lost) and
        hands it over by its rid alone, with others it may have handed over before."""
        rid = f"g{len(self.log)}"
        if issued:
            body = {"rid": rid, "service": service, "person": {"key": person}}
            if (response := self._do(kiosk, "issue", body)) is not None:
                self.issued_ids.add(response["ticket"]["id"])
        handed = self._do(kiosk, "handover", {"abandoned": [rid, *rids]})
        assert handed is not None and handed["abandoned"][0]["rid"] == rid
        answer = self.engine.handle(kiosk, "issue", {"rid": rid, "service": service}, self.now)
        assert answer.error is not None and answer.error.code == "superseded", answer

    @rule(kiosk=st.sampled_from(KIOSKS), data=st.data())
    def void(self, kiosk, data) -> None:
        if self.issued_ids:
            ticket = data.draw(st.sampled_from(sorted(self.issued_ids)))
            self._do(kiosk, "void", {"ticket": ticket})

    @rule(terminal=st.sampled_from(TERMINALS), use_expect=st.booleans())
    def call(self, terminal, use_expect) -> None:
        term = self.engine.terminals[terminal]
        day = self.engine.day_of(self.now)
        served = CONFIG.windows[term.window].services
        ordinary_waiting = any(
            t.status == Status.WAITING
            and t.day == day
            and t.service in served
            and t.priority is None
            for t in self.engine.tickets.values()
        )
        payload = {}
        if use_expect:
            payload["expect"] = self.engine.tickets[term.current].number if term.current else None
        response = self._do(terminal, "call", payload)
        if response is None or not response.get("changed") or response["ticket"] is None:
            return
        ticket = self.engine.tickets[response["ticket"]["id"]]
        assert ticket.day == day and ticket.service in served
        label("call: priority" if ticket.priority else "call: ordinary")
        if ticket.priority:
            if ordinary_waiting:
                label(f"call: priority over ordinary, streak {self.streak[terminal]}")
                assert self.streak[terminal] < CONFIG.rules.interleave, "interleave broken"
            self.streak[terminal] += 1
        else:
            self.streak[terminal] = 0

    @rule(
        terminal=st.sampled_from(TERMINALS),
        action=st.sampled_from(["recall", "skip", "finish", "pause", "resume", "logout"]),
    )
    def simple(self, terminal, action) -> None:
        if self._do(terminal, action, {}) is not None and action == "logout":
            self.streak[terminal] = 0

    @rule(terminal=st.sampled_from(TERMINALS), staff=st.sampled_from(["S001", "S002", "S999"]))
    def login(self, terminal, staff) -> None:
        self._do(terminal, "login", {"staff": staff, "pin": PINS.get(staff, "0000")})

    @rule(terminal=st.sampled_from(TERMINALS), service=st.sampled_from(SERVICES))
    def transfer(self, terminal, service) -> None:
        self._do(terminal, "transfer", {"service": service})

    @precondition(lambda self: bool(self.issued_ids))
    @rule(terminal=st.sampled_from(TERMINALS), data=st.data())
    def reinstate(self, terminal, data) -> None:
        ticket = data.draw(st.sampled_from(sorted(self.issued_ids)))
        self._do(terminal, "reinstate", {"ticket": ticket})

    @precondition(lambda self: bool(self.issued_ids))
    @rule(
        terminal=st.sampled_from(TERMINALS),
        data=st.data(),
        level=st.one_of(st.none(), st.integers(0, 6)),
        reason=st.sampled_from(["", "态度差"]),
    )
    def rate(self, terminal, data, level, reason) -> None:
        ticket = data.draw(st.sampled_from(sorted(self.issued_ids)))
        response = self._do(terminal, "rate", {"ticket": ticket, "level": level, "reason": reason})
        if response is not None and response["changed"] and level is not None:
            assert 1 <= level <= 5 and (level > 2 or reason)

    @rule(terminal=st.sampled_from(TERMINALS), action=st.sampled_from(["issue", "bogus"]))
    def forbidden(self, terminal, action) -> None:
        before = len(self.engine.tickets)
        assert self._do(terminal, action, {"service": "social"}) is None
        assert len(self.engine.tickets) == before

    @rule()
    def tick(self) -> None:
        before = {tid: t for tid, t in self.engine.tickets.items()}
        events = self.engine.tick(self.now)
        self.log.extend(events)
        gone = set(before) - set(self.engine.tickets)
        archived = [e.data["before"] for e in events if e.type == "tickets.archived"]
        if gone:
            label("tick: tickets archived")
            assert archived, "tickets vanished without being archived"
            assert all(
                before[tid].status in SETTLED and before[tid].queue_day < archived[0]
                for tid in gone
            ), "an unsettled or recent ticket was archived"
        self.archived |= gone

    @rule()
    def take_snapshot(self) -> None:
        """Serialise the state here (JSON + zlib, as stored); replay the rest on top."""
        data = snapshot(self.engine)
        self.stored = (encode(data), len(self.log), person_keys_since(data))
        self._restore()

    def _restore(self) -> None:
        assert self.stored is not None
        blob, self.restored_upto, _ = self.stored
        self.restored = restore(CONFIG, None, decode(blob))

    @rule(days=st.integers(0, 3))
    def erase_person_keys(self, days: int) -> None:
        """Retention, as the hall does it: the store erases the keys from the log and
        rewrites a snapshot holding one of them without it, and the engine forgets them."""
        before = self.now - days * 86400
        self.engine.forget_person_keys(before)
        self.log = [
            Event(e.type, e.at, {k: v for k, v in e.data.items() if k != "person_key"})
            if e.type == "ticket.issued" and e.at < before
            else e
            for e in self.log
        ]
        self.replayed, self.replayed_upto = Engine(CONFIG), 0  # a full replay of the new log
        if self.stored is not None:
            blob, upto, keys_since = self.stored
            if keys_since is not None and keys_since < before:
                label("erase: a snapshot rewritten")
                data = forget_person_keys(decode(blob), before)  # as Store.erase_person_keys
                assert (person_keys_since(data) or before) >= before
                self.stored = (encode(data), upto, person_keys_since(data))
            self._restore()  # the kept snapshot, then the rest of the log as it is now
        kept = person_keys_since(snapshot(self.engine))
        assert kept is None or kept >= before, "the state still holds an erased key"

    # ---- invariants -------------------------------------------------------

    @invariant()
    def nothing_vanishes(self) -> None:
        engine = self.engine
        assert set(engine.tickets) | self.archived == self.issued_ids
        assert not set(engine.tickets) & self.archived
        queued = [entry[2] for queue in engine.queues.values() for entry in queue]
        assert len(queued) == len(set(queued)), "a ticket is queued twice"
        waiting = {tid for tid, t in engine.tickets.items() if t.status == Status.WAITING}
        assert set(queued) == waiting, "queues and waiting tickets disagree"

    @invariant()
    def one_place_per_ticket(self) -> None:
        currents = [t.current for t in self.engine.terminals.values() if t.current]
        assert len(currents) == len(set(currents)), "one ticket at two terminals"
        called = {tid for tid, t in self.engine.tickets.items() if t.status == Status.CALLED}
        assert set(currents) == called, "a called ticket is at no terminal, or vice versa"

    @invariant()
    def replay_rebuilds_the_same_state(self) -> None:
        # The log folded into a fresh engine so far, one step's events at a time: the
        # same as replaying the whole log from the start (started again after erasures).
        for event in self.log[self.replayed_upto :]:
            self.replayed.apply(event)
        self.replayed_upto = len(self.log)
        assert state(self.replayed) == state(self.engine)

    @invariant()
    def snapshot_and_tail_rebuild_the_same_state(self) -> None:
        if self.restored is not None:
            for event in self.log[self.restored_upto :]:
                self.restored.apply(event)
            self.restored_upto = len(self.log)
            assert state(self.restored) == state(self.engine)
        here = restore(CONFIG, None, decode(encode(snapshot(self.engine))))
        assert state(here) == state(self.engine)


def state(engine: Engine) -> tuple:
    """Everything the engine holds, compared without the snapshot code's help: every
    field of every ticket and terminal (dataclass equality), queues and terminals in
    their order (it decides the order of events), counters, history, times, seq."""
    assert set(vars(engine)) == ENGINE_ATTRIBUTES, "new engine state: teach the snapshot"
    return (
        list(engine.tickets.items()),
        list(engine.terminals.items()),
        [(k, list(v)) for k, v in engine.queues.items()],
        dict(engine.last_number),
        dict(engine.issued_count),
        {k: list(v) for k, v in engine.leases.items()},
        {k: list(v) for k, v in engine.person_history.items()},
        dict(engine.service_time),
        engine.seq,
        list(engine.cases.cases.items()),
        list(engine.appointments.bookings.items()),
        engine.appointments._by_key,
        engine.by_request,  # derived from the tickets: a restore rebuilds it
        {k: list(v.items()) for k, v in engine.abandoned.items()},  # in their order
    )


ENGINE_ATTRIBUTES = {
    *("config", "secret", "authority", "longest_quota_s"),
    *("tickets", "last_number", "terminals", "queues", "person_history", "service_time", "seq"),
    *("issued_count", "leases", "cases"),
    "appointments",
    "by_request",
    "abandoned",
}


EngineMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineProperties = pytest.mark.long(EngineMachine.TestCase)

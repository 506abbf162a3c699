"""The city's ingest core (city/ingest.py): whatever the network does to the feed — lost,
doubled, reordered deliveries, writes that fail, replays answered late — every event of
every hall ends up written exactly once, in sequence. And what leaves the hall
(hall/feed.py `supervision_event`, `pack`) carries no person key and fits a message."""

from __future__ import annotations

import datetime as dt
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from city.ingest import REPLAY_TIMEOUT_S, CityEvent, Ingest
from city.project import micros, project
from hall.feed import (
    REPLAY_QUEUE,
    REPLAY_RATE,
    SUPERVISION_FIELDS,
    ReplayQueue,
    pack,
    supervision_event,
)
from quhao.messages import EVENTS
from quhao.messages.feed import (
    EARLIEST,
    LATEST,
    MAX_VALUE_TEXT,
    FeedBatch,
    FeedEvent,
    ReplayRequest,
)


def _event(seq: int) -> FeedEvent:
    return FeedEvent(
        seq=seq, at=1_790_000_000.0 + seq, type="ticket.called", data={"ticket": f"t{seq}"}
    )


def _batch(hall_db: str, head: int, seqs: list[int], replay: bool = False) -> FeedBatch:
    return FeedBatch(
        site="h", db=hall_db, head=head, events=[_event(s) for s in seqs], replay=replay
    )


class World:
    """Halls that commit events, a network that loses, doubles and reorders what they
    send, a city database whose writes sometimes fail, and the ingest core between —
    with small bounds, so that its window, memory bound and switches between the live
    feed and pulling pages all come into play."""

    def __init__(self, rnd: random.Random, halls: int) -> None:
        self.rnd = rnd
        self.logs = {f"hall{i}": 0 for i in range(halls)}  # last committed seq per hall
        self.written: dict[str, list[int]] = {h: [] for h in self.logs}
        self.network: list[tuple[str, FeedBatch]] = []
        self.ingest = Ingest(
            max_ahead=50,
            max_held=80,
            window=2,
            in_flight=3,
            ready_max=30,
            pull_above=40,
            live_below=10,
        )
        self.ingest.probe_all()
        self.now = 0.0

    def commit(self, hall: str, count: int) -> None:
        first = self.logs[hall] + 1
        self.logs[hall] += count
        seqs = list(range(first, self.logs[hall] + 1))
        for start in range(0, len(seqs), 7):  # live batches, like the hall's rounds
            self.send(hall, _batch("db-" + hall, self.logs[hall], seqs[start : start + 7]))

    def send(self, hall: str, batch: FeedBatch) -> None:
        roll = self.rnd.random()
        if roll < 0.2:
            return  # lost
        self.network.append((hall, batch))
        if roll > 0.9:
            self.network.append((hall, batch))  # doubled

    def deliver_some(self) -> None:
        self.rnd.shuffle(self.network)  # any order
        count = self.rnd.randint(0, len(self.network))
        live = self.ingest.mode()
        for hall, batch in self.network[:count]:
            if not batch.replay and not live and self.rnd.random() < 0.5:
                continue  # not subscribed to the live feed (some was on its way already)
            self.ingest.receive(hall, batch, self.now)
        del self.network[:count]

    def write(self) -> None:
        halls = self.ingest.halls.values()
        assert self.ingest.pending() == sum(f.end - f.taken for f in halls if not f.stopped)
        assert self.ingest.held == sum(len(f.received) for f in halls)
        assert self.ingest.held - self.ingest.pending() <= 80  # ahead of a hole
        assert all(len(f.asked) <= 2 for f in halls)
        assert sum(len(f.asked) for f in halls) <= 3
        batch = self.ingest.take(self.rnd.randint(1, 40))
        if batch is None:
            return
        if self.rnd.random() < 0.15:
            self.ingest.failed(batch)  # the database refused: nothing of it is stored
            return
        for event in batch.events:
            self.written[event.hall].append(event.seq)
        self.ingest.committed(batch)

    def answer_replays(self) -> None:
        for request in self.ingest.requests(self.now):
            last = self.logs[request.hall]
            seqs = list(range(request.after + 1, min(last, request.after + request.limit) + 1))
            self.send(request.hall, _batch("db-" + request.hall, last, seqs, replay=True))

    def heartbeat(self) -> None:
        for hall, last in self.logs.items():
            self.send(hall, _batch("db-" + hall, last, []))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), halls=st.integers(1, 4), rounds=st.integers(1, 30))
def test_any_order_loss_and_duplication_ends_with_each_event_once_in_sequence(
    seed: int, halls: int, rounds: int
) -> None:
    rnd = random.Random(seed)
    world = World(rnd, halls)
    for _ in range(rounds):
        hall = rnd.choice(list(world.logs))
        world.commit(hall, rnd.randint(0, 30))
        world.deliver_some()
        world.write()
        world.now += rnd.choice([0.1, 1.0, 6.0])
        world.answer_replays()
    # the traffic stops; heartbeats, replays and writes go on until the city has it all
    for _ in range(2000):
        if all(world.written[h] == list(range(1, n + 1)) for h, n in world.logs.items()):
            break
        world.heartbeat()
        world.deliver_some()
        world.write()
        world.now += 6.0
        world.answer_replays()
    for hall, last in world.logs.items():
        assert world.written[hall] == list(range(1, last + 1)), hall


def test_a_lost_answer_is_asked_again_and_the_hall_catches_up() -> None:
    ingest = Ingest({"h": (0, "db"), "quiet": (0, "db")}, window=2)
    assert ingest.mode()  # nothing behind: the live feed
    ingest.receive("h", _batch("db", 1200, []), 0.0)  # a heartbeat: 1,200 to fetch
    first = ingest.requests(0.0)
    # a window: two pages at once, of exactly what is missing
    assert [(r.after, r.limit) for r in first] == [(0, 500), (500, 500)]
    assert ingest.requests(1.0) == []  # the window is full
    # the first answer arrives: its place is free, the next page goes out at once
    ingest.receive("h", _batch("db", 1200, list(range(1, 501)), replay=True), 1.0)
    assert [(r.after, r.limit) for r in ingest.requests(1.0)] == [(1000, 200)]
    # the second answer is lost on the way; the third arrives
    ingest.receive("h", _batch("db", 1200, list(range(1001, 1201)), replay=True), 1.5)
    assert ingest.requests(2.0) == []  # still in flight, not yet given up
    batch = ingest.take(10_000)
    assert batch is not None and batch.upto == {"h": (0, 500)}
    ingest.committed(batch)
    # unanswered for REPLAY_TIMEOUT_S, it is asked again: only the hole, not what is here
    again = ingest.requests(REPLAY_TIMEOUT_S)
    assert [(r.hall, r.after, r.limit) for r in again] == [("h", 500, 500)]
    ingest.receive("h", _batch("db", 1200, list(range(501, 1001)), replay=True), 10.5)
    batch = ingest.take(10_000)
    assert batch is not None and [e.seq for e in batch.events] == list(range(501, 1201))
    ingest.committed(batch)
    assert ingest.behind() == 0 and ingest.stats.replays_lost == 1


def test_a_silent_hall_is_asked_again_less_and_less_often() -> None:
    ingest = Ingest({"h": (0, "db")})
    assert ingest.mode()
    ingest.receive("h", _batch("db", 3, []), 0.0)  # a heartbeat, then silence
    asked = [t for t in range(0, 200) if ingest.requests(float(t))]
    # unanswered for REPLAY_TIMEOUT_S (10 s): again at once, then after waits of 10, 20,
    # 40, 60 s (BACKOFF_MAX_S): a hall out of reach holds no place in the window for long
    assert asked == [0, 10, 30, 60, 110, 180]
    ingest.receive("h", _batch("db", 3, []), 190.0)  # it speaks: asked again at once
    assert [r.after for r in ingest.requests(190.0)] == [0]


def test_a_hall_out_of_reach_at_start_does_not_keep_the_city_from_the_live_feed() -> None:
    ingest = Ingest({"h": (0, "db"), "away": (0, "db")})
    ingest.probe_all()
    assert {r.hall for r in ingest.requests(0.0)} == {"h", "away"}
    ingest.receive("h", _batch("db", 0, [], replay=True), 0.1)
    assert not ingest.mode()  # "away" has not said how far it is
    ingest.requests(REPLAY_TIMEOUT_S)  # its probe is given up: heartbeats will tell
    assert not ingest.halls["away"].probe and ingest.mode()


def test_pulling_the_city_asks_every_hall_now_and_then_how_far_it_is() -> None:
    ingest = Ingest({"h": (0, "db")})
    assert not ingest.live  # as after a start: pulling until it knows better
    assert [r.after for r in ingest.requests(0.0)] == [0]
    ingest.receive("h", _batch("db", 0, [], replay=True), 0.2)
    assert ingest.requests(0.5) == []  # answered, nothing missing: not before POLL_S
    assert [r.after for r in ingest.requests(1.0)] == [0]


def test_far_behind_the_city_pulls_pages_and_takes_the_live_feed_again_once_near() -> None:
    ingest = Ingest({"a": (0, "db"), "b": (0, "db")}, pull_above=1000, live_below=100)
    ingest.probe_all()
    assert not ingest.mode()  # until every hall said how far it is
    ingest.receive("a", _batch("db", 10, [], replay=True), 0.0)
    ingest.receive("b", _batch("db", 20, [], replay=True), 0.0)
    assert ingest.mode()  # 30 behind: the live feed
    ingest.receive("a", _batch("db", 5000, []), 1.0)  # a heartbeat: 5,000 behind
    assert not ingest.mode() and ingest.stats.to_pull == 1
    for request in ingest.requests(1.0):
        last = min(request.after + request.limit, 5000 if request.hall == "a" else 20)
        seqs = list(range(request.after + 1, last + 1))
        ingest.receive(request.hall, _batch("db", last, seqs, replay=True), 1.0)
    assert not ingest.mode()  # 1,000 events in: still 4,000 behind
    while (batch := ingest.take(10_000)) is not None:
        ingest.committed(batch)
    for _ in range(20):
        for request in ingest.requests(2.0):
            seqs = list(range(request.after + 1, request.after + request.limit + 1))
            ingest.receive(request.hall, _batch("db", 5000, seqs, replay=True), 2.0)
        while (batch := ingest.take(10_000)) is not None:
            ingest.committed(batch)
    assert ingest.behind() == 0 and ingest.mode()


def test_while_more_is_ready_than_a_batch_holds_every_hall_is_written_in_turn() -> None:
    ingest = Ingest({f"h{i}": (0, "db") for i in range(10)})
    served: set[str] = set()
    for round_ in range(3):  # 5,000 events come in a round, 3,000 are written
        for hall in ingest.halls:
            seqs = list(range(round_ * 500 + 1, round_ * 500 + 501))
            ingest.receive(hall, _batch("db", seqs[-1], seqs), float(round_))
        batch = ingest.take(3000)
        assert batch is not None
        served |= set(batch.upto)
        ingest.committed(batch)
    assert served == set(ingest.halls)  # not the first six halls again and again


def test_memory_is_bounded_whatever_the_halls_send() -> None:
    ingest = Ingest({f"h{i}": (0, "db") for i in range(5)}, max_ahead=300, max_held=1000)
    for i in range(5):  # far ahead of a hole at 1: kept up to the bounds, no further
        for first in (2, 1002):
            ingest.receive(f"h{i}", _batch("db", 2000, list(range(first, first + 999))), 0.0)
    assert ingest.held == 1000 and ingest.stats.beyond == 5 * 2 * 999 - 1000
    assert all(len(f.received) <= 299 for f in ingest.halls.values())


def test_take_never_hands_out_a_hole_or_twice() -> None:
    ingest = Ingest({"h": (3, "db")})
    ingest.receive("h", _batch("db", 9, [5, 6, 4, 4, 9]), 0.0)
    batch = ingest.take(100)
    assert batch is not None and [e.seq for e in batch.events] == [4, 5, 6]
    assert ingest.take(100) is None  # 7 and 8 are missing
    assert [(r.hall, r.after) for r in ingest.requests(0.0)] == [("h", 6)]
    assert ingest.requests(1.0) == []  # one request in flight at a time
    assert [r.after for r in ingest.requests(10.0)] == [6]  # unanswered: asked again


def test_a_foreign_database_or_a_rewound_log_stops_the_hall() -> None:
    ingest = Ingest({"a": (10, "db-a"), "b": (10, "db-b")})
    assert "database" in (ingest.receive("a", _batch("other", 12, [11]), 0.0) or "")
    ingest.receive("b", _batch("db-b", 12, [11]), 0.0)
    assert ingest.take(10) is not None
    ingest.receive("b", _batch("db-b", 5, []), 0.0)  # an old head alone: a late redelivery
    restored = FeedEvent(seq=11, at=1_800_000_000.0, type="ticket.called", data={})
    stopped = ingest.receive("b", FeedBatch(site="h", db="db-b", head=11, events=[restored]), 0.0)
    assert "backup" in (stopped or "")
    ingest.receive("a", _batch("db-a", 12, [11, 12]), 0.0)
    assert ingest.take(10) is None and ingest.requests(0.0) == []


def test_what_leaves_the_hall_has_no_person_key_and_only_what_supervision_needs() -> None:
    stored = {
        "ticket": "2026-11-23/A001",
        "day": "2026-11-23",
        "number": "A001",
        "service": "social",
        "kiosk": "kiosk-K1",
        "priority": None,
        "person_key": "ab" * 32,
        "override_staff": None,
        "seq": 17,
    }
    out = supervision_event(5, 1.5, "ticket.issued", stored)
    assert out == {
        "seq": 5,
        "at": 1.5,
        "type": "ticket.issued",
        "data": {k: v for k, v in stored.items() if k not in ("person_key", "seq")},
    }
    assert supervision_event(6, 2.0, "something.new", {"person_key": "x", "a": 1})["data"] == {}
    reinstated = supervision_event(7, 3.0, "ticket.reinstated", {"ticket": "t", "order": [1, 2]})
    assert reinstated["data"] == {"ticket": "t"}
    assert all("person_key" not in fields for fields in SUPERVISION_FIELDS.values())


PERSONAL = {"person_key", "person", "rid", "ref", "name", "id_number"}


def test_every_field_allowed_out_is_a_field_of_its_event_and_none_names_a_person() -> None:
    """The allow-list follows the wire contract (a renamed field would silently stop
    leaving) and lets out nothing that identifies a citizen, here or at the online hall."""
    for kind, fields in SUPERVISION_FIELDS.items():
        model = EVENTS.get(kind)
        assert model is not None, f"{kind} is not an event of the wire contract"
        names = {info.alias or name for name, info in model.model_fields.items()}
        assert set(fields) <= names, (kind, set(fields) - names)
        assert not set(fields) & PERSONAL, (kind, set(fields) & PERSONAL)


@given(
    sizes=st.lists(st.integers(0, MAX_VALUE_TEXT), max_size=60),  # a field's bound
    limit=st.integers(1_000, 20_000),
)
def test_pack_cuts_the_feed_into_messages_under_the_limit_in_order(
    sizes: list[int], limit: int
) -> None:
    events = [
        supervision_event(
            i + 1, 1_790_000_000.0, "ticket.rated", {"ticket": "t", "reason": "字" * n}
        )
        for i, n in enumerate(sizes)
    ]
    messages = pack("h", "db", len(events), events, max_bytes=limit)
    decoded = [FeedBatch.model_validate(json.loads(m)) for m in messages]
    assert [e.seq for b in decoded for e in b.events] == [e["seq"] for e in events]
    for raw, batch in zip(messages, decoded, strict=True):
        assert len(raw) <= limit or len(batch.events) == 1
        assert batch.head == len(events) and batch.site == "h"


def test_the_city_file_names_every_problem_with_its_line() -> None:
    import pytest

    from quhao.config import ConfigError
    from quhao.config.city import loads_city

    text = (
        '[city]\ndatabase = "dbname=city"\nbatch_events = "many"\ncolour = 1\n\n'
        '[[halls]]\nid = "baiyun"\n\n[[halls]]\nid = "Bad!"\n\n[[halls]]\nid = "baiyun"\n'
    )
    with pytest.raises(ConfigError) as caught:
        loads_city(text, "city.toml")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("city.toml:3: city.batch_events: must be int")
    assert lines[1].startswith("city.toml:4: city.colour: unknown key")
    assert lines[2].startswith("city.toml:10: halls[1].id:")
    config = loads_city('[city]\ndatabase = "x"\n[[halls]]\nid = "a"\n[[halls]]\nid = "b"\n')
    assert config.hall_ids == {"a", "b"} and config.city.followup_days == 15
    with pytest.raises(ConfigError, match=r"city.toml:8: halls\[1\].id: hall 'a' is listed twice"):
        loads_city(
            '[city]\ndatabase = "x"\n\n[[halls]]\nid = "a"\n\n[[halls]]\nid = "a"\n', "city.toml"
        )


def test_the_hall_keeps_a_few_requests_waiting_and_answers_at_its_pace() -> None:
    queue = ReplayQueue()
    pages = [ReplayRequest(after=500 * n, limit=500) for n in range(REPLAY_QUEUE + 2)]
    assert all(queue.offer(p) for p in pages[:REPLAY_QUEUE])
    assert queue.offer(pages[1])  # asked again before it was served: waits once
    assert not queue.offer(pages[REPLAY_QUEUE])  # one too many: the oldest goes
    assert [queue.next(0.0) for _ in range(REPLAY_QUEUE + 1)] == [
        *pages[1 : REPLAY_QUEUE + 1],
        None,
    ]
    for n in range(3 * REPLAY_RATE.burst):  # a flood of new requests, one served a round
        queue.offer(ReplayRequest(after=n, limit=1))
    served = sum(queue.next(1.0) is not None for _ in range(100))
    assert served <= REPLAY_QUEUE  # what waits, no more
    served = 0
    for n in range(200):  # one a round, rounds every 10 ms for 2 s: the rate holds
        queue.offer(ReplayRequest(after=10_000 + n, limit=1))
        served += queue.next(2.0 + n * 0.01) is not None
    assert served <= REPLAY_RATE.burst + REPLAY_RATE.per_s * 2 + 1


@given(st.floats(min_value=EARLIEST, max_value=LATEST, exclude_max=True))
def test_an_event_time_goes_to_postgresql_as_datetime_would_have_sent_it(at: float) -> None:
    """The writer hands PostgreSQL a timestamptz in its binary form (µs since 2000, an
    int): the same microsecond `datetime.fromtimestamp` rounds to, and the same month."""
    since = dt.datetime.fromtimestamp(at, dt.UTC) - dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert micros(at) == since // dt.timedelta(microseconds=1)
    month = dt.datetime.fromtimestamp(at, dt.UTC).date().replace(day=1)
    assert project([CityEvent("h", 1, at, "x", {})]).months == {month}


def test_a_number_beyond_the_integer_columns_is_not_projected() -> None:
    """The binary COPY would wrap it: the event stays in `events`, no ticket row takes it."""
    at = 1_790_000_000.0
    issued = {"ticket": "2026-09-21/A001", "number": "A001", "service": "s"}
    rows = project(
        [
            CityEvent("h", 1, at, "ticket.issued", issued),
            CityEvent("h", 2, at, "ticket.called", {"ticket": "2026-09-21/A001", "window": 2**31}),
            CityEvent("h", 3, at, "ticket.rated", {"ticket": "2026-09-21/A001", "level": 2**40}),
        ]
    )
    assert len(rows.events) == 3 and rows.unprojected == 2
    assert not rows.ratings
    (ticket,) = rows.new_tickets
    assert ticket[6] == "waiting" and ticket[14] is None  # status, window

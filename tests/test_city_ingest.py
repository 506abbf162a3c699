"""The city's ingest core (city/ingest.py): whatever the network does to the feed — lost,
doubled, reordered deliveries, writes that fail, replays answered late — every event of
every hall ends up written exactly once, in sequence. And what leaves the hall
(hall/feed.py `supervision_event`, `pack`) carries no person key and fits a message."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from city.ingest import Ingest
from hall.feed import SUPERVISION_FIELDS, pack, supervision_event
from quhao.messages import EVENTS
from quhao.messages.feed import MAX_VALUE_TEXT, FeedBatch, FeedEvent


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
    send, a city database whose writes sometimes fail, and the ingest core between."""

    def __init__(self, rnd: random.Random, halls: int) -> None:
        self.rnd = rnd
        self.logs = {f"hall{i}": 0 for i in range(halls)}  # last committed seq per hall
        self.written: dict[str, list[int]] = {h: [] for h in self.logs}
        self.network: list[tuple[str, FeedBatch]] = []
        self.ingest = Ingest(max_ahead=50)
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
        for hall, batch in self.network[:count]:
            self.ingest.receive(hall, batch, self.now)
        del self.network[:count]

    def write(self) -> None:
        halls = self.ingest.halls.values()
        assert self.ingest.pending() == sum(f.end - f.taken for f in halls if not f.stopped)
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

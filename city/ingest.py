"""The city's ingest core: every hall's feed into one ordered stream per hall, exactly once.

Pure and deterministic (time passed in): deliveries go in, batches to write and replay
requests come out. Nothing here touches a socket or a database.

Per hall it keeps `done`, the last sequence durably written (loaded from the database
at start), the events received after it (in any order, any number of times), how far
they were handed out for writing (`taken`), and the hall's `head` (the last sequence it
says it committed). Then:

- `take` hands out, per hall, the run of consecutive events after `taken` — never a
  hole, never one twice; `committed` moves `done` up to it, `failed` puts the events
  back so the next `take` hands them out again;
- a gap — the hall's head, or an event received, beyond the consecutive run — becomes a
  replay request "events after the run's end", one at a time per hall; the next page is
  asked as soon as the answer has moved the run on, or again after `REPLAY_TIMEOUT_S`;
- events far ahead of `done` (`MAX_AHEAD`) are not kept (they will be asked for again):
  memory is bounded whatever a hall sends.

A hall whose log no longer fits what the city holds is stopped (`stopped`): another
database id (a new record: `quhao hall --reinit`), or an event at a sequence the city
already has with another time (a backup put back with `quhao restore` numbers new events
from where the backup ended; the city remembers the times of the last `RECENT` events of
each hall to notice). Its sequence numbers would mean other events now, so nothing more
of it is taken until someone decides (docs/city.md). A head lower than what the city
holds alone proves nothing: a late redelivery of an old message carries an old head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quhao.messages.feed import MAX_PAGE, FeedBatch

MAX_AHEAD = 20_000  # events kept per hall beyond the consecutive run
REPLAY_TIMEOUT_S = 5.0  # ask again when an answer has not moved the run on by then
RECENT = 2_000  # per hall: the times of this many handed-out events, to notice a rewound log


@dataclass(frozen=True)
class CityEvent:
    hall: str
    seq: int
    at: float
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Replay:
    hall: str
    after: int
    limit: int = MAX_PAGE


@dataclass
class HallFeed:
    done: int = 0  # durably written up to here
    db: str | None = None  # the hall database whose feed this is
    taken: int = 0  # handed out for writing up to here (>= done)
    head: int = 0  # the hall's last committed seq, as far as we heard
    received: dict[int, CityEvent] = field(default_factory=dict)  # seq > taken
    asked: tuple[int, float] | None = None  # the replay request in flight: (after, when)
    stopped: str | None = None
    recent: dict[int, float] = field(default_factory=dict)  # seq -> at, of handed-out events
    end: int = 0  # the end of the consecutive run we have (written, taken or received)
    highest: int = 0  # the highest seq received and kept

    def run_end(self) -> int:
        return self.end

    def advance(self) -> int:
        """Move `end` over what has arrived; how far it moved."""
        start = self.end = max(self.end, self.taken)
        while self.end + 1 in self.received:
            self.end += 1
        return self.end - start


@dataclass(frozen=True)
class Batch:
    events: list[CityEvent]
    upto: dict[str, tuple[int, int]]  # hall -> (done before, last seq in this batch)
    dbs: dict[str, str | None]


@dataclass
class Stats:
    received: int = 0
    duplicates: int = 0
    beyond: int = 0  # dropped for being too far ahead
    replays_asked: int = 0
    refused: int = 0  # batches of a stopped hall


class Ingest:
    def __init__(
        self,
        positions: dict[str, tuple[int, str | None]] | None = None,
        *,
        max_ahead: int = MAX_AHEAD,
        replay_timeout: float = REPLAY_TIMEOUT_S,
    ) -> None:
        self.halls: dict[str, HallFeed] = {}
        for hall, (done, db) in (positions or {}).items():
            self.halls[hall] = HallFeed(done=done, db=db, taken=done, head=done, end=done)
        self.max_ahead = max_ahead
        self.replay_timeout = replay_timeout
        self.stats = Stats()
        self.ready = 0  # events `take` would hand out now, over all halls

    def hall(self, hall: str) -> HallFeed:
        feed = self.halls.get(hall)
        if feed is None:
            feed = self.halls[hall] = HallFeed()
        return feed

    # ---- deliveries ---------------------------------------------------------

    def receive(self, hall: str, batch: FeedBatch, now: float) -> str | None:
        """Take one feed message of `hall` (already checked to be that hall's); returns
        why the hall is stopped, when this message stopped it (to log once)."""
        feed = self.hall(hall)
        if feed.stopped:
            self.stats.refused += 1
            return None
        if feed.db is None:
            feed.db = batch.db
        elif batch.db != feed.db:
            return self.stop(
                hall, f"its feed now comes from database {batch.db}, not {feed.db} (a new record?)"
            )
        feed.head = max(feed.head, batch.head)
        for event in batch.events:
            self.stats.received += 1
            known = feed.recent.get(event.seq)
            if known is None and event.seq in feed.received:
                known = feed.received[event.seq].at
            if known is not None and known != event.at:
                return self.stop(
                    hall,
                    f"its event {event.seq} is not the one the city holds (a backup put back?)",
                )
            if event.seq <= feed.taken or event.seq in feed.received:
                self.stats.duplicates += 1
                continue
            if event.seq > feed.done + self.max_ahead:
                self.stats.beyond += 1
                continue
            feed.head = max(feed.head, event.seq)
            feed.highest = max(feed.highest, event.seq)
            feed.received[event.seq] = CityEvent(hall, event.seq, event.at, event.type, event.data)
        self.ready += feed.advance()
        if batch.replay and feed.asked is not None:
            feed.asked = None  # answered: the next page may be asked for at once
        return None

    def stop(self, hall: str, why: str) -> str:
        """Take nothing more of this hall (until the daemon starts again)."""
        feed = self.hall(hall)
        if not feed.stopped:
            self.ready -= feed.end - feed.taken
            feed.stopped = why
        return why

    # ---- writing --------------------------------------------------------------

    def pending(self) -> int:
        """Events that `take` would hand out now."""
        return self.ready

    def take(self, limit: int, hall: str | None = None) -> Batch | None:
        """Up to `limit` events (of one hall, if named), each hall's in sequence after
        what was handed out."""
        events: list[CityEvent] = []
        upto: dict[str, tuple[int, int]] = {}
        dbs: dict[str, str | None] = {}
        for name, feed in self.halls.items():
            if (
                (hall is not None and name != hall)
                or feed.stopped
                or feed.taken + 1 not in feed.received
            ):
                continue
            start = feed.taken
            while len(events) < limit and feed.taken + 1 in feed.received:
                feed.taken += 1
                event = feed.received.pop(feed.taken)
                events.append(event)
                feed.recent[event.seq] = event.at
            for old in range(start - RECENT, feed.taken - RECENT + 1):
                feed.recent.pop(old, None)
            upto[name] = (start, feed.taken)
            dbs[name] = feed.db
            self.ready -= feed.taken - start
            if len(events) >= limit:
                break
        return Batch(events, upto, dbs) if events else None

    def committed(self, batch: Batch) -> None:
        for hall, (_, last) in batch.upto.items():
            feed = self.halls[hall]
            feed.done = max(feed.done, last)

    def failed(self, batch: Batch) -> None:
        """The batch was not written: its events go back, to be handed out again."""
        for event in batch.events:
            feed = self.halls[event.hall]
            feed.received[event.seq] = event
        for hall, (start, last) in batch.upto.items():
            feed = self.halls[hall]
            feed.taken = min(feed.taken, start)
            if not feed.stopped:
                self.ready += last - start

    def reset(self, hall: str, done: int) -> None:
        """The database says `hall` is written up to `done` (another writer, a failed
        check): start over from there; what is missing will be asked for."""
        feed = self.hall(hall)
        feed.done = feed.taken = feed.end = done
        feed.received = {s: e for s, e in feed.received.items() if s > done}
        feed.highest = max(feed.received, default=0)
        feed.asked = None
        feed.advance()
        self.ready = sum(f.end - f.taken for f in self.halls.values() if not f.stopped)

    # ---- gaps -----------------------------------------------------------------

    def requests(self, now: float) -> list[Replay]:
        """A replay request for every hall with a gap and no request in flight (or one
        that has gone unanswered too long, or that the run has since passed)."""
        out = []
        for hall, feed in self.halls.items():
            if feed.stopped:
                continue
            end = feed.run_end()
            wanted = max(feed.head, feed.highest)
            if wanted <= end:
                feed.asked = None
                continue
            if feed.asked is not None:
                after, when = feed.asked
                if after == end and now - when < self.replay_timeout:
                    continue
            feed.asked = (end, now)
            self.stats.replays_asked += 1
            out.append(Replay(hall, end, min(MAX_PAGE, self.max_ahead)))
        return out

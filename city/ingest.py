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
- **catching up** (docs/city.md): a gap — the hall's head, or an event received, beyond
  the consecutive run — becomes replay requests for exactly the missing events, pages
  of at most `MAX_PAGE`. Up to `WINDOW` pages are in flight per hall and `IN_FLIGHT`
  over all halls: the next page is asked as soon as an answer frees a place, not after
  a timer. A page unanswered for `REPLAY_TIMEOUT_S` (lost on the way, or the hall is
  out of reach) frees its place and is asked again, at once the first time, then after
  a back-off growing to `BACKOFF_MAX_S` while the hall stays silent, so no hall can
  stay stuck and a silent one holds no place for long. Nothing new is asked while
  `ready_max` events already wait to be written: the city asks as fast as it writes.
- **live or pull**: while the city keeps up (`behind`, the events the halls have that
  it has not written, under `LIVE_BELOW`) it takes the live feed; when it falls more
  than `PULL_ABOVE` behind (an outage, a cut mended, a slow database) it stops taking
  the live feed (`live` false: the daemon unsubscribes) and pulls pages — 500 events a
  message instead of a handful — until it is back under `LIVE_BELOW`. Pulling, it hears
  no heartbeats, so a hall with nothing known missing is asked every `POLL_S` all the
  same: `behind` stays true and the new events come in pages too. After a start or a
  reconnect every hall is asked once (`probe_all`) to learn its head.
- memory is bounded whatever the halls send: at most `max_ahead` events kept per hall
  beyond what was written, and `max_held` over all halls ahead of a hole (an event that
  extends a run is always kept: it is ready to write, and the city asks for no more
  while `ready_max` are); what is not kept is asked for again.

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

MAX_AHEAD = 20_000  # events kept per hall beyond what was written
MAX_HELD = 100_000  # events kept over all halls, not yet handed out for writing
REPLAY_TIMEOUT_S = 10.0  # a page unanswered this long is asked again
POLL_S = 1.0  # pulling: a hall with nothing known missing is asked this often (its head)
BACKOFF_MAX_S = 60.0  # a hall silent this long after asking is asked this often at most
WINDOW = 4  # pages in flight per hall (hall/feed.py REPLAY_QUEUE keeps as many waiting)
IN_FLIGHT = 64  # pages in flight over all halls: ~32,000 events, ~5 MB
PULL_ABOVE = 100_000  # events behind: stop taking the live feed, pull pages instead
LIVE_BELOW = 20_000  # events behind: take the live feed again
READY_MAX = 10_000  # events waiting to be written: ask for no more meanwhile
RECENT = 2_000  # per hall: the times of this many handed-out events, to notice a rewound log


@dataclass(slots=True)  # not frozen: its __init__ would cost 1.6 µs more an event
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


@dataclass(frozen=True)
class Asked:
    after: int
    upto: int  # after + limit
    when: float


@dataclass
class HallFeed:
    done: int = 0  # durably written up to here
    db: str | None = None  # the hall database whose feed this is
    taken: int = 0  # handed out for writing up to here (>= done)
    head: int = 0  # the hall's last committed seq, as far as we heard
    received: dict[int, CityEvent] = field(default_factory=dict)  # seq > taken
    asked: list[Asked] = field(default_factory=list)  # pages in flight, in order
    probe: bool = False  # ask once even without a known gap: how far is the hall?
    polled: float = float("-inf")  # pulling: when it was last asked without a known gap
    backoff: float = 0.0  # after a page went unanswered: wait this long to ask again
    retry_at: float = 0.0  # not asked again before this
    stopped: str | None = None
    recent: dict[int, float] = field(default_factory=dict)  # seq -> at, of handed-out events
    end: int = 0  # the end of the consecutive run we have (written, taken or received)
    highest: int = 0  # the highest seq received and kept

    def run_end(self) -> int:
        return self.end

    def wanted(self) -> int:
        """The last event the hall is known to have."""
        return max(self.head, self.highest)

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
    beyond: int = 0  # not kept (too far ahead, or memory full): asked for again
    replays_asked: int = 0
    replays_lost: int = 0  # pages unanswered in time, asked again
    refused: int = 0  # batches of a stopped hall
    to_pull: int = 0  # times the city stopped taking the live feed to catch up
    to_live: int = 0


class Ingest:
    def __init__(
        self,
        positions: dict[str, tuple[int, str | None]] | None = None,
        *,
        max_ahead: int = MAX_AHEAD,
        max_held: int = MAX_HELD,
        replay_timeout: float = REPLAY_TIMEOUT_S,
        window: int = WINDOW,
        in_flight: int = IN_FLIGHT,
        ready_max: int = READY_MAX,
        pull_above: int = PULL_ABOVE,
        live_below: int = LIVE_BELOW,
    ) -> None:
        self.halls: dict[str, HallFeed] = {}
        for hall, (done, db) in (positions or {}).items():
            self.halls[hall] = HallFeed(done=done, db=db, taken=done, head=done, end=done)
        self.max_ahead, self.max_held = max_ahead, max_held
        self.replay_timeout = replay_timeout
        self.window, self.in_flight, self.ready_max = window, max(1, in_flight), ready_max
        self.pull_above, self.live_below = pull_above, min(live_below, pull_above)
        self.stats = Stats()
        self.ready = 0  # events `take` would hand out now, over all halls
        self.held = 0  # events kept in `received`, over all halls (ready or ahead)
        self.live = False  # take the live feed (else pull pages); decided by `mode`
        self._cursor = 0  # where the next round of requests starts: every hall in turn
        self._take_cursor = 0  # and the next batch

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
        feed.probe = False  # it answered: its head is known
        feed.backoff = feed.retry_at = 0.0
        run = feed.end = max(feed.end, feed.taken)  # the consecutive run, as it grows here
        for event in batch.events:
            self.stats.received += 1
            seq = event.seq
            known = feed.recent.get(seq)
            if known is None and seq in feed.received:
                known = feed.received[seq].at
            if known is not None and known != event.at:
                return self.stop(
                    hall,
                    f"its event {seq} is not the one the city holds (a backup put back?)",
                )
            if seq <= feed.taken or seq in feed.received:
                self.stats.duplicates += 1
                continue
            follows = seq == run + 1  # it extends the run: ready to write
            ahead = self.held - self.ready - (run - feed.end)  # kept beyond a hole
            if seq > feed.done + self.max_ahead or (not follows and ahead >= self.max_held):
                self.stats.beyond += 1  # not kept: asked for again in its turn
                continue
            feed.head = max(feed.head, seq)
            feed.highest = max(feed.highest, seq)
            feed.received[seq] = CityEvent(hall, seq, event.at, event.type, event.data)
            self.held += 1
            if follows:
                run = seq
        self.ready += feed.advance()  # over this message's run and what it joined
        if feed.asked:
            # A page is answered once its last event (or the hall's head, if it asked
            # beyond) is here; if part of it went missing, that is a gap like any other.
            end, head, received = feed.end, feed.head, feed.received
            feed.asked = [
                a for a in feed.asked if (last := min(a.upto, head)) > end and last not in received
            ]
        return None

    def stop(self, hall: str, why: str) -> str:
        """Take nothing more of this hall (until the daemon starts again)."""
        feed = self.hall(hall)
        if not feed.stopped:
            self.ready -= feed.end - feed.taken
            self.held -= len(feed.received)
            feed.stopped = why
            feed.asked, feed.received, feed.probe = [], {}, False
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
        if hall is None:
            # Every hall in turn: a batch starts where the last one stopped, so while
            # more is ready than a batch holds no hall waits for ever behind the others.
            names = list(self.halls)
            start = self._take_cursor % len(names) if names else 0
            halls = [(n, self.halls[n]) for n in names[start:] + names[:start]]
        else:
            halls = [(hall, self.hall(hall))]
        for name, feed in halls:
            if feed.stopped or feed.taken + 1 not in feed.received:
                continue
            start = feed.taken
            received, recent = feed.received, feed.recent
            while len(events) < limit and feed.taken + 1 in received:
                feed.taken += 1
                event = received.pop(feed.taken)
                events.append(event)
                recent[event.seq] = event.at
            for old in range(start - RECENT, feed.taken - RECENT + 1):
                recent.pop(old, None)
            upto[name] = (start, feed.taken)
            dbs[name] = feed.db
            self.ready -= feed.taken - start
            self.held -= feed.taken - start
            if len(events) >= limit:
                break
        if hall is None and upto:
            self._take_cursor = list(self.halls).index(next(reversed(upto))) + 1
        return Batch(events, upto, dbs) if events else None

    def committed(self, batch: Batch) -> None:
        for hall, (_, last) in batch.upto.items():
            feed = self.halls[hall]
            feed.done = max(feed.done, last)

    def failed(self, batch: Batch) -> None:
        """The batch was not written: its events go back, to be handed out again."""
        for event in batch.events:
            feed = self.halls[event.hall]
            if event.seq > feed.done and event.seq not in feed.received:
                feed.received[event.seq] = event
                self.held += 1
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
        feed.asked = []
        feed.advance()
        self.ready = sum(f.end - f.taken for f in self.halls.values() if not f.stopped)
        self.held = sum(len(f.received) for f in self.halls.values())

    # ---- catching up ------------------------------------------------------------

    def behind(self) -> int:
        """Events the halls are known to have that are not written yet."""
        return sum(max(0, f.wanted() - f.done) for f in self.halls.values() if not f.stopped)

    def probe_all(self) -> None:
        """Ask every hall once how far it is (after a start or a reconnect)."""
        for feed in self.halls.values():
            if not feed.stopped:
                feed.probe = True
                feed.retry_at = 0.0

    def mode(self) -> bool:
        """Whether to take the live feed now (else pull pages); see the module's doc."""
        behind = self.behind()
        if self.live and behind > self.pull_above:
            self.live = False
            self.stats.to_pull += 1
        elif (
            not self.live
            and behind < self.live_below
            and not any(f.probe for f in self.halls.values() if not f.stopped)
        ):
            self.live = True  # (after a start: once every hall said how far it is)
            self.stats.to_live += 1
        return self.live

    def requests(self, now: float) -> list[Replay]:
        """The pages to ask for now: every hall with a gap in turn, a page a hall per
        pass, up to its window and the total in flight (module doc)."""
        halls = list(self.halls.items())
        flying = 0
        for _, feed in halls:  # expire the pages unanswered too long
            if not feed.asked:
                continue
            if now - feed.asked[0].when >= self.replay_timeout:
                self.stats.replays_lost += len(feed.asked)
                feed.asked = []
                feed.probe = False  # out of reach: its heartbeats will tell when it is back
                feed.retry_at = now + feed.backoff
                feed.backoff = min(BACKOFF_MAX_S, max(self.replay_timeout, 2 * feed.backoff))
            else:
                flying += len(feed.asked)
        if self.ready >= self.ready_max or flying >= self.in_flight:
            return []
        out: list[Replay] = []
        count = len(halls)
        start = self._cursor % count if count else 0
        for _ in range(self.window):
            asked_any = False
            for i in range(count):
                name, feed = halls[(start + i) % count]
                if feed.stopped or len(feed.asked) >= self.window or now < feed.retry_at:
                    continue
                replay = self._next_page(name, feed, now)
                if replay is None:
                    continue
                out.append(replay)
                asked_any = True
                flying += 1
                if flying >= self.in_flight:
                    self._cursor = (start + i + 1) % count
                    self.stats.replays_asked += len(out)
                    return out
            if not asked_any:
                break
        self._cursor = (start + 1) % count if count else 0
        self.stats.replays_asked += len(out)
        return out

    def _next_page(self, hall: str, feed: HallFeed, now: float) -> Replay | None:
        """The next page this hall should be asked for: the first missing events after
        what is had or already asked, up to the next event received."""
        after = max(feed.end, feed.asked[-1].upto if feed.asked else 0)
        received = feed.received
        while after + 1 in received:  # a run already here: not asked again
            after += 1
        wanted = feed.wanted()
        if after >= wanted:
            # Nothing known missing: ask anyway to learn how far the hall is — once after
            # a start (probe), and every POLL_S while pulling (no heartbeats then).
            if feed.asked or not (feed.probe or (not self.live and now >= feed.polled + POLL_S)):
                return None
            feed.polled = now
        limit = MAX_PAGE
        if after < wanted:
            limit = min(MAX_PAGE, wanted - after)
            for seq in range(after + 1, after + limit + 1):  # stop at what is here already
                if seq in received:
                    limit = seq - after - 1
                    break
        if limit <= 0:
            return None
        feed.asked.append(Asked(after, after + limit, now))
        return Replay(hall, after, limit)

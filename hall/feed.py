"""The durable feed out of the hall, for the city (docs/city.md).

Every committed event already has its place in the hall's log: `events.seq`, an
INTEGER PRIMARY KEY that only ever grows — the hall appends and never deletes an event
(erasing person keys rewrites an event's data in place; snapshots and pruning touch other
tables), and a backup is a copy of the whole log. So `seq` is the per-hall sequence
number of the feed; nothing new is stored. (A backup put back with `quhao restore` does
rewind it: the city notices — the hall's head falls behind what it holds — and stops
taking that hall's feed until someone decides; docs/city.md.)

- **Live**: once a round, after the batch's answers went out, whatever was committed
  since the last round is read back from the log and published on `quhao/{site}/feed` at
  QoS 1, in order. Read back from the log, not taken from memory, so a live batch and a
  replay of the same events are the same bytes.
- **Heartbeat**: every `HEARTBEAT_S` and on (re)connect, a batch without events: `head`
  tells the city how far the log goes, so a lost tail is noticed without new traffic.
  While the broker is away nothing is queued up: the city asks for what it missed.
- **Replay**: the city asks `quhao/{site}/feed/req` for "events after N" (only the city's
  bridge can publish there: the hall broker's ACL gives no other user that topic) and
  gets the answer on `quhao/{site}/feed/replay` — a topic of its own, so the city can
  stop taking the live feed while it catches up and still hear its answers. Up to
  `REPLAY_QUEUE` requests wait (the city keeps that many pages in flight per hall; a
  newer one pushes the oldest out, a repeat is one); one is served per round, at most
  `MAX_PAGE` events, at most `REPLAY_RATE` pages a second (a burst of a few); anything
  malformed is logged and dropped. `ReplayQueue` is that pace, pure: the benchmark's
  simulated halls answer through it too.

`supervision_event` (what leaves the hall) and `pack` (how it is cut into messages) are
pure; the rest is a thin adapter the hall's loop drives.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hall.limits import TokenBucket
from quhao.config import Rate
from quhao.messages.feed import MAX_FEED_BYTES, MAX_PAGE, ReplayRequest
from quhao.mqtt import Bus, Message
from quhao.wire import BadPayload, decode_object, encode, shown

log = logging.getLogger("quhao.hall.feed")

HEARTBEAT_S = 10.0  # real seconds between heartbeats
LIVE_MAX = 2000  # more than this unpublished (the broker was away): the city asks instead
REPLAY_RATE = Rate(per_s=10, burst=20)  # pages a second: a flood never starves the hall
REPLAY_QUEUE = 4  # requests waiting at most: the city's pages in flight per hall
PACK_BYTES = 128 * 1024  # one feed message at most this big (well under MAX_FEED_BYTES)

_CASE = ("case", "day", "number", "service", "window", "staff")

# What supervision needs of each fact; everything else stays in the hall (person keys
# above all, but also queue positions and internal counters). A type not listed here
# leaves with no fields at all.
SUPERVISION_FIELDS: dict[str, tuple[str, ...]] = {
    "ticket.issued": (
        *("ticket", "day", "number", "service", "kiosk", "priority", "override_staff"),
        *("offline", "handed_over_at"),  # printed from a kiosk's lease while cut off
    ),
    "ticket.refused": ("kiosk", "service", "reason", "day"),
    "ticket.called": ("ticket", "terminal", "window", "staff"),
    "ticket.recalled": ("ticket", "terminal", "window"),
    "ticket.skipped": ("ticket", "terminal", "reason"),
    "ticket.finished": ("ticket", "terminal", "window", "staff"),
    "ticket.transferred": ("ticket", "terminal", "from", "to"),
    "ticket.reinstated": ("ticket", "terminal"),
    "ticket.voided": ("ticket", "kiosk"),
    "ticket.expired": ("ticket", "reason"),
    "ticket.carried": ("ticket", "to_day"),
    "ticket.rated": ("ticket", "number", "service", "window", "level", "reason", "staff"),
    "alert.bad_rating": ("ticket", "number", "service", "window", "level", "reason", "staff"),
    "alert.max_wait": ("ticket", "number", "service", "window", "waited_s"),
    "terminal.login": ("terminal", "staff"),
    "terminal.logout": ("terminal",),
    "terminal.paused": ("terminal",),
    "terminal.resumed": ("terminal",),
    "tickets.archived": ("before",),
    # Follow-up of bad ratings (hall/cases.py): the hall's own deadline and every step.
    # A step's note is the office's record of a call-back: it leaves (docs/privacy.md).
    "case.opened": (*_CASE, "ticket", "level", "reason", "due"),
    "case.updated": (*_CASE, "state", "by", "note"),
    "case.appealed": (*_CASE, "by", "note"),
    "case.decided": (*_CASE, "decision", "by", "note"),
    "alert.case_due": (*_CASE, "due"),
    "alert.case_overdue": (*_CASE, "due"),
    # Online appointments (hall/appointments.py): the slot and the service, never the
    # person key nor the online hall's booking reference (it names the person there).
    "appointment.booked": ("day", "service", "start", "end"),
    "appointment.checked_in": ("day", "service", "start", "end", "ticket", "kiosk"),
    "appointment.no_show": ("day", "service", "start", "end"),
    # Offline issuing: which kiosk held which numbers (audit of the numbering).
    "lease.granted": ("kiosk", "day", "service", "first", "last"),
    "lease.released": ("kiosk", "day", "service", "unused"),
    "alert.quota_breach": ("ticket", "number", "service", "kiosk", "held"),
    "alert.daily_cap_exceeded": ("ticket", "number", "service", "kiosk"),
    "alert.lease_breach": ("kiosk", "day", "service", "number", "reason"),
}


def supervision_event(seq: int, at: float, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """One logged event as it leaves the hall: its seq, time, type, and only the fields
    supervision needs (never a person key)."""
    wanted = SUPERVISION_FIELDS.get(kind, ())
    return {
        "seq": seq,
        "at": at,
        "type": kind,
        "data": {k: data[k] for k in wanted if k in data},
    }


def pack(
    site: str,
    db: str,
    head: int,
    events: list[dict[str, Any]],
    *,
    replay: bool = False,
    max_bytes: int = PACK_BYTES,
) -> list[bytes]:
    """Feed messages for these events, in order, each under `max_bytes` (an event bigger
    than that alone — it cannot be: a hall event is a few hundred bytes — goes alone).
    No events: one heartbeat."""
    return pack_encoded(
        site, db, head, [encode(e) for e in events], replay=replay, max_bytes=max_bytes
    )


def pack_encoded(
    site: str,
    db: str,
    head: int,
    events: list[bytes],
    *,
    replay: bool = False,
    max_bytes: int = PACK_BYTES,
) -> list[bytes]:
    """`pack` for events already encoded (`encode(supervision_event(…))`)."""
    envelope = {"site": site, "db": db, "head": head, "replay": replay}
    overhead = len(encode({**envelope, "events": []}))
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = overhead
    for raw in events:
        if chunk and size + len(raw) + 1 > max_bytes:
            out.append(_join(envelope, chunk))
            chunk, size = [], overhead
        chunk.append(raw)
        size += len(raw) + 1
    if chunk or not out:
        out.append(_join(envelope, chunk))
    return out


def _join(envelope: dict[str, Any], events: list[bytes]) -> bytes:
    head = encode(envelope)[:-1]  # the object without its closing brace
    return head + b',"events":[' + b",".join(events) + b"]}"


def read_replay_request(raw: bytes) -> ReplayRequest:
    """A replay request, or BadPayload saying what is wrong."""
    payload = decode_object(raw)
    try:
        return ReplayRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise BadPayload(f"{where}: {first['msg']}") from exc


@dataclass
class ReplayQueue:
    """The replay requests waiting for an answer, and the pace they get one at (pure):
    `offer` each request as it arrives, `next` once a round for the one to serve now."""

    size: int = REPLAY_QUEUE
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(REPLAY_RATE))
    waiting: deque[ReplayRequest] = field(default_factory=deque)

    def offer(self, request: ReplayRequest) -> bool:
        """Queue it; False if that pushed the oldest out (the city asks again)."""
        if request in self.waiting:
            return True  # asked again before it was served: one answer is enough
        self.waiting.append(request)
        if len(self.waiting) > self.size:
            self.waiting.popleft()
            return False
        return True

    def next(self, now: float) -> ReplayRequest | None:
        """The request to serve in this round, if any waits and the pace allows one."""
        if not self.waiting or not self.bucket.take(now):
            return None
        return self.waiting.popleft()


@dataclass
class FeedStats:
    live_events: int = 0
    replay_pages: int = 0
    replay_refused: int = 0
    malformed: int = 0


class Feed:
    """The hall's side of the feed; every method runs in the hall's owner thread."""

    def __init__(
        self,
        bus: Bus,
        db: sqlite3.Connection,
        site: str,
        database_id: str,
        feed_topic: str,
        request_topic: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus, self.db, self.site, self.database_id = bus, db, site, database_id
        self.topic, self.request_topic = feed_topic, request_topic
        self.replay_topic = f"{feed_topic}/replay"  # quhao.topics.Topics.feed_replay
        self.monotonic = monotonic
        self.sent = self._head()  # live publication starts with what is committed next
        self.replays = ReplayQueue()
        self.requests = 0  # replay requests received, well-formed or not
        self.next_heartbeat = 0.0
        self.stats = FeedStats()
        self._refusal_logged = 0.0

    def start(self) -> None:
        self.bus.subscribe(self.request_topic, self._on_request, retain_as_published=True)
        self.bus.on_connect(self._on_connect)

    def _on_connect(self) -> None:
        self.next_heartbeat = 0.0  # tell the city the head at once (from the loop)

    def _head(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def _rows(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [
            supervision_event(seq, at, kind, json.loads(data))
            for seq, at, kind, data in self.db.execute(
                "SELECT seq, at, type, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            )
        ]

    # ---- from the broker (paho callback, in the owner thread) ----------------

    def _on_request(self, message: Message) -> None:
        self.requests += 1  # the hall's loop drains the socket while these arrive
        if message.retain:
            self.stats.malformed += 1
            log.warning("ignored a retained replay request")
            return
        try:
            request = read_replay_request(message.payload)
        except BadPayload as exc:
            self.stats.malformed += 1
            log.warning("ignored a malformed replay request: %s", shown(str(exc), 120))
            return
        if not self.replays.offer(request):
            self.stats.replay_refused += 1  # the oldest waiting one went: asked again later
            now = self.monotonic()
            if now - self._refusal_logged > 10:
                self._refusal_logged = now
                log.warning(
                    "feed: more than %d replay requests waiting; the oldest dropped",
                    self.replays.size,
                )

    # ---- from the hall's loop, once a round --------------------------------

    def pump(self) -> None:
        """Publish what was committed since the last round; serve one replay page; beat."""
        if not self.bus.connected.is_set():
            return
        try:
            self._publish_live()
            self._serve_replay()
            now = self.monotonic()
            if now >= self.next_heartbeat:
                self.next_heartbeat = now + HEARTBEAT_S
                self._send(pack(self.site, self.database_id, self.sent, []))
        except sqlite3.Error as exc:
            log.warning("feed postponed: %s", exc)

    def _publish_live(self) -> None:
        head = self._head()
        if head <= self.sent:
            return
        if head - self.sent > LIVE_MAX:
            # Far behind (the broker was away): the city asks for these at its own pace.
            log.info(
                "feed: %d events committed while away; the city asks for them", head - self.sent
            )
            self.sent = head
            self.next_heartbeat = 0.0
            return
        events = self._rows(self.sent, head - self.sent)
        self._send(pack(self.site, self.database_id, head, events))
        self.sent = head
        self.stats.live_events += len(events)

    def _serve_replay(self) -> None:
        request = self.replays.next(self.monotonic())
        if request is None:
            return
        events = self._rows(request.after, min(request.limit, MAX_PAGE))
        head = max(self._head(), events[-1]["seq"] if events else 0)
        self._send(pack(self.site, self.database_id, head, events, replay=True), self.replay_topic)
        self.stats.replay_pages += 1

    def _send(self, messages: Iterable[bytes], topic: str | None = None) -> None:
        for raw in messages:
            if len(raw) > MAX_FEED_BYTES:  # cannot happen with PACK_BYTES; never send it
                log.error("feed message of %d bytes not sent", len(raw))
                continue
            self.bus.publish(topic or self.topic, raw, qos=1)

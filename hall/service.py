"""The hall's MQTT adapter: requests in, committed answers, events and retained state out.

One thread owns the engine, the database and the MQTT socket (paho driven inline by
`loop_once`). Each round it reads whatever arrived (a batch), decides the requests in
order, commits the batch in ONE SQLite transaction (group commit: one fsync for many
kiosks), and only then answers and publishes.

Every request crosses a trust boundary on the way in (`_on_request`): the device is the
broker-authenticated name in the topic, never a payload's claim; retained requests are
ignored; the answer goes only to the device's own reply topic; a device over its rate is
answered `rate_limited`; a payload that cannot be stored safely is answered `bad_request`
before it reaches the engine. One bad request never fails another.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hall import record
from hall.engine import Engine
from hall.feed import Feed
from hall.limits import DeviceLimiter
from hall.model import Event
from hall.snapshot import EVERY_EVENTS as SNAPSHOT_EVERY
from hall.snapshot import FORMAT as SNAPSHOT_FORMAT
from hall.snapshot import SnapshotError, decode, restore
from hall.snapshot import save as save_snapshot
from hall.store import Store
from hall.views import hall_state, public_event, window_profile, window_state
from quhao.clock import Clock
from quhao.config import ConfigError, SiteConfig
from quhao.messages import MAX_RID
from quhao.mqtt import Bus, Message, TlsFiles
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object, encode, error, ok, shown

log = logging.getLogger("quhao.hall")

MAX_BATCH = 256
HALL_STATE_INTERVAL_S = 0.25  # real seconds between hall/state publications at most
# hall/state waits this long after the round that changed it went out (but never more than
# HALL_STATE_INTERVAL_S after the change): on a hall server's few cores a call's window
# state then reaches the board, the phone pages and the LED before the broker, the screens
# and the browsers are busy with the counts (measured: docs/screens.md, "Benchmark").
HALL_STATE_SETTLE_S = 0.02
TICK_INTERVAL_S = 1.0
REQUEST_MEMORY_S = 2 * 86400  # how long a rid's answer is kept for retries
MAX_REPLY_TOPIC = 256
HOUSEKEEPING_S = 5.0  # real seconds between disk checks, marker updates, checkpoints


@dataclass
class Request:
    device: str
    action: str
    reply_topic: str
    correlation: bytes | None
    rid: Any = None
    payload: dict[str, Any] | None = None
    problem: str | None = None  # why it cannot be decided at all (bad_request)


@dataclass(frozen=True)
class Decision:
    """A request decided: its answer and events, and their text as the store keeps it."""

    response: dict[str, Any]
    events: list[Event]
    stored: str  # the answer as JSON
    texts: list[str]  # each event's data as JSON


@dataclass(frozen=True)
class Outbox:
    """What a round publishes once it is committed: the window states, encoded while the
    round's work is fresh (before the commit's wait), then its events."""

    states: list[tuple[str, bytes]]  # (topic, payload)
    events: list[Event]
    profiles: list[int]  # windows whose clerks logged in or out


@dataclass(frozen=True)
class Rebuilt:
    engine: Engine
    snapshot_seq: int  # the snapshot it started from; 0: the whole log was replayed
    replayed: int  # events applied after it
    ms: float


def rebuild(
    config: SiteConfig, store: Store, secret: bytes | None = None, *, snapshots: bool = True
) -> Engine:
    return load_state(config, store, secret, snapshots=snapshots).engine


def load_state(
    config: SiteConfig, store: Store, secret: bytes | None = None, *, snapshots: bool = True
) -> Rebuilt:
    """The engine as the store records it: the newest snapshot that loads, plus the events
    after it (or every event, when there is none). A snapshot that does not load
    (damaged, another format) is skipped with a warning and an older one tried."""
    started = time.perf_counter()
    try:
        found = _newest_usable_snapshot(config, store, secret) if snapshots else None
        engine, since = found or (Engine(config, secret), 0)
        replayed = 0
        try:
            for event in store.events_after(since):
                engine.apply(event)
                replayed += 1
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if not since:
                raise
            log.warning(
                "the events after the snapshot at seq %d do not apply to it (%r); "
                "replaying the whole log instead",
                since,
                exc,
            )
            return load_state(config, store, secret, snapshots=False)
    except sqlite3.DatabaseError as exc:
        raise record.damaged(store.path, exc) from exc
    ms = (time.perf_counter() - started) * 1000
    if since:
        log.info(
            "state rebuilt from snapshot at seq %d + %d events in %.0f ms (%d live tickets)",
            since,
            replayed,
            ms,
            len(engine.tickets),
        )
    else:
        log.info(
            "state rebuilt from all %d events (no snapshot) in %.0f ms (%d live tickets)",
            replayed,
            ms,
            len(engine.tickets),
        )
    return Rebuilt(engine, since, replayed, ms)


def _newest_usable_snapshot(
    config: SiteConfig, store: Store, secret: bytes | None
) -> tuple[Engine, int] | None:
    last = store.last_seq()
    below: int | None = None
    while (stored := store.latest_snapshot(below)) is not None:
        below = stored.seq
        try:
            if stored.seq > last:
                raise SnapshotError(f"it is ahead of the last event ({last})")
            if stored.format != SNAPSHOT_FORMAT:
                raise SnapshotError(f"format {stored.format}, this hall reads {SNAPSHOT_FORMAT}")
            return restore(config, secret, decode(stored.state)), stored.seq
        except SnapshotError as exc:
            log.warning("snapshot at seq %d skipped: %s", stored.seq, exc)
    return None


class StorageRefused(Exception):
    """A request whose answer or events cannot be stored (a bug if it ever happens)."""


class HallService:
    def __init__(
        self,
        config: SiteConfig,
        broker: str,
        state_dir: str | Path,
        clock: Clock | None = None,
        *,
        password: str | None = None,
        tls: TlsFiles | None = None,
        secret: bytes | None = None,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        self.config = config
        self.secret = secret
        self.snapshot_every = snapshot_every
        self.clock = clock or Clock()
        self.topics = Topics(config.site.id)
        # The record first: a missing, foreign or damaged database is refused here, with
        # one line saying how to restore, before anything could issue a number again.
        self.state_dir = Path(state_dir)
        self._lock: IO[str] | None = record.lock(self.state_dir)
        record.check(self.state_dir, config.site.id)
        self.store = Store(self.state_dir / record.DATABASE, site=config.site.id)
        self._marked_seq = -1
        self._mark_record()
        self._snapshot_seq = 0  # the newest snapshot this hall loaded or wrote
        self._events_since_snapshot = 0
        self.engine = self._rebuild()
        try:
            self.answered = self.store.remembered_requests()
        except sqlite3.DatabaseError as exc:
            raise record.damaged(self.store.path, exc) from exc
        self.bus = Bus(
            broker,
            "hall",
            username="hall",
            password=password,
            tls=tls,
            availability_topic=self.topics.availability("hall"),
        )
        self.feed = Feed(
            self.bus,
            self.store.db,
            config.site.id,
            self.store.database_id,
            self.topics.feed,
            self.topics.feed_request,
        )
        self.inbox: list[Request] = []
        self.limiter = DeviceLimiter(
            # a rater touch screen is held to a counter's rate
            {
                "kiosk": config.limits.kiosk,
                "counter": config.limits.counter,
                "rater": config.limits.counter,
                "office": config.limits.counter,  # a person at a terminal, like a clerk
            }
        )
        self.health: dict[str, Any] = {"state": "ok", "disk": "ok"}
        self._health_published: dict[str, Any] = {}
        self._republish = threading.Event()
        self._hall_dirty = True
        self._hall_published_at = 0.0
        self._hall_dirty_since = 0.0  # when a round first changed it since it went out
        self._hall_settle_at = 0.0
        self._day = ""
        self.heartbeat = time.monotonic()  # the watchdog looks at this

    # ---- running ----------------------------------------------------------

    def start(self) -> None:
        self.bus.subscribe(self.topics.request_filter, self._on_request, retain_as_published=True)
        self.bus.on_connect(self._on_connect)
        self.feed.start()
        self.bus.connect_inline(required=False)

    def run(
        self,
        stop: threading.Event,
        reload: threading.Event | None = None,
        load: Callable[[], SiteConfig] | None = None,
    ) -> None:
        """Serve until stop is set; take the configuration `load` gives whenever reload
        is set (the command line's loader: its overrides and start-up checks again)."""
        next_tick = time.monotonic()
        next_prune = time.monotonic()
        next_housekeeping = time.monotonic()
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            if reload is not None and reload.is_set() and load is not None:
                reload.clear()
                self.reload(load)
            if self._republish.is_set():
                self._republish.clear()
                self.publish_all_state()
            # Network I/O and the queue share this one thread: whatever arrived while
            # the last batch was being committed is read now and forms the next batch.
            self.bus.loop_once(0.0 if self.inbox else self._idle_wait())
            for _ in range(MAX_BATCH):  # paho reads a packet or few per round: drain the socket
                waiting, asked = len(self.inbox), self.feed.requests
                self.bus.loop_once(0.0)
                if len(self.inbox) == waiting and self.feed.requests == asked:
                    break
            batch = self.inbox[:MAX_BATCH]
            del self.inbox[:MAX_BATCH]
            if batch:
                self.process(batch)
            now_mono = time.monotonic()
            if now_mono >= next_tick:
                next_tick = now_mono + TICK_INTERVAL_S
                self._tick()
            if now_mono >= next_prune:
                next_prune = now_mono + 3600
                self._prune()
            if now_mono >= next_housekeeping:
                next_housekeeping = now_mono + HOUSEKEEPING_S
                self._housekeeping()
            if self._events_since_snapshot >= self.snapshot_every:
                self.write_snapshot(f"{self._events_since_snapshot} events since the last")
            self._maybe_publish_hall_state()
            self.feed.pump()  # to the city: what this round committed, after its answers

    def reload(self, load: Callable[[], SiteConfig]) -> bool:
        """Re-read the site file with `load` (the one that loaded it at start, so
        `--secret-file` and the other overrides hold); a broken one is reported and the
        running config kept."""
        try:
            config = load()
            # As at start: the secret named, if any (the loader has checked it reads).
            secret = config.read_secret() if config.site.secret_file else None
        except ConfigError as exc:
            log.error("configuration not reloaded: %s", exc)
            return False
        if config.site.id != self.config.site.id:
            log.error(
                "configuration not reloaded: site.id changed (%s -> %s); restart instead",
                self.config.site.id,
                config.site.id,
            )
            return False
        if secret != self.secret:  # the engine checks staff card proofs with the one it has
            log.error("configuration not reloaded: the site secret changed; restart instead")
            return False
        self.config = config
        self.engine.reconfigure(config)
        log.info(
            "configuration reloaded: %d services, %d windows, %d counters",
            len(config.services),
            len(config.windows),
            len(config.counters),
        )
        self.publish_all_state()
        return True

    def close(self) -> None:
        self.bus.stop()
        try:
            self._mark_record()
        except OSError as exc:
            log.warning("record marker not updated at stop: %s", exc)
        self.store.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _on_connect(self) -> None:
        self._republish.set()  # published from the loop, not from inside paho's callback

    # ---- requests ---------------------------------------------------------

    def _on_request(self, message: Message) -> None:
        parsed = self.topics.parse_request(message.topic)
        if parsed is None:
            log.warning("ignored request on malformed topic %s", shown(message.topic, 80))
            return
        device, action = parsed
        if message.retain:
            # A retained request would be redelivered on every reconnect of the hall.
            log.warning("ignored a retained request from %s/%s", shown(device), shown(action))
            return
        own_reply = self.topics.reply(device)
        request = Request(device, action, self._reply_topic(own_reply, message), None)
        request.correlation = (message.correlation or b"")[:128] or None
        role = self.config.device_role(device)
        if role is not None and not self.limiter.allow(device, role, time.monotonic()):
            request.problem = "rate_limited"
            self.inbox.append(request)
            return
        try:
            payload = decode_object(message.payload)
        except BadPayload as exc:
            request.problem = str(exc)
        else:
            request.rid = payload.get("rid")
            if not isinstance(request.rid, str) or not 1 <= len(request.rid) <= MAX_RID:
                request.problem = f"field 'rid' must be a string of 1 to {MAX_RID} characters"
                request.rid = request.rid if _echoable(request.rid) else None
            request.payload = payload
        self.inbox.append(request)

    @staticmethod
    def _reply_topic(own_reply: str, message: Message) -> str:
        """The asker's own reply topic, or a plain sub-topic of it; never anything else.

        A wildcard, an empty level or an over-long name would make the publish fail (or
        reach others): such a request is answered on the plain reply topic instead."""
        wanted = message.response_topic
        if not wanted or wanted == own_reply:
            return own_reply
        rest = wanted[len(own_reply) + 1 :] if wanted.startswith(own_reply + "/") else None
        if (
            rest
            and len(wanted) <= MAX_REPLY_TOPIC
            and all(rest.split("/"))
            and not any(c in rest for c in "+#\0")
        ):
            return wanted
        return own_reply

    def process(self, batch: list[Request]) -> None:
        answers: list[tuple[Request, dict[str, Any]]] = []
        events: list[Event] = []
        texts: list[str] = []  # the events' data as stored, made once (Decision)
        to_store: list[tuple[str, str, float, str]] = []  # each answer as stored
        decided: dict[tuple[str, str], dict[str, Any]] = {}
        for request in batch:
            if request.problem:
                answers.append((request, self._problem_answer(request)))
                continue
            key = (request.device, request.rid)
            previous = decided.get(key) or (
                self.store.response(*key) if key in self.answered else None
            )
            if previous is not None:
                answers.append((request, previous))  # a retry: same answer, no effect
                continue
            now = self.clock.now()
            try:
                decision = self._decide(request, now)
            except StorageRefused as exc:
                # The engine holds events it cannot store: keep what this batch decided
                # before, then rebuild from the disk so the engine matches it again.
                log.error("request from %s refused at the store: %s", request.device, exc)
                self._store_and_publish(answers, events, texts, to_store, decided)
                answers, events, texts, to_store, decided = [], [], [], [], {}
                self.engine = self._rebuild()
                answers.append((request, error(request.rid, "bad_request", str(exc))))
                continue
            decided[key] = decision.response
            to_store.append((request.device, request.rid, now, decision.stored))
            events.extend(decision.events)
            texts.extend(decision.texts)
            answers.append((request, decision.response))
        self._store_and_publish(answers, events, texts, to_store, decided)

    def _store_and_publish(
        self,
        answers: list[tuple[Request, dict[str, Any]]],
        events: list[Event],
        texts: list[str],
        to_store: list[tuple[str, str, float, str]],
        decided: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        """Commit what was decided, then publish: nothing leaves before it is on disk."""
        if not to_store:
            self._publish_answers(answers)  # problems and retries: nothing to store
            return
        # The window states are encoded before the commit and sent right after it: after
        # the wait for the disk nothing else is done before they leave.
        outbox = self._outbox(events)
        if self._commit(events, to_store, texts):
            self.answered.update((device, rid) for device, rid, _, _ in to_store)
            self._send(outbox, answers)
        else:
            self._publish_answers(self._unavailable(answers, decided))

    def _problem_answer(self, request: Request) -> dict[str, Any]:
        if request.problem == "rate_limited":
            log.warning("rate limited %s/%s", request.device, shown(request.action))
            return error(None, "rate_limited", "too many requests from this device; slow down")
        log.info(
            "bad request from %s/%s: %s", request.device, shown(request.action), request.problem
        )
        return error(request.rid, "bad_request", request.problem or "bad request")

    def _decide(self, request: Request, now: float) -> Decision:
        """The engine's answer, checked to be storable before the batch goes on."""
        outcome = self.engine.handle(request.device, request.action, request.payload or {}, now)
        if outcome.error:
            log.info(
                "%s %s refused: %s (%s)",
                request.device,
                request.action,
                outcome.error.code,
                outcome.error.message,
            )
            response = error(request.rid, outcome.error.code, outcome.error.message)
        else:
            response = ok(request.rid, outcome.response)
        try:  # the text the store keeps: made once, here, where a failure hurts no other
            stored = json.dumps(response, ensure_ascii=False)
            texts = [json.dumps(e.data, ensure_ascii=False) for e in outcome.events]
            for text in (stored, *texts):
                text.encode("utf-8")  # a lone surrogate would fail the whole batch's commit
        except (TypeError, ValueError) as exc:
            raise StorageRefused(f"cannot be stored: {exc}") from exc
        return Decision(response, outcome.events, stored, texts)

    @staticmethod
    def _unavailable(
        answers: list[tuple[Request, dict[str, Any]]], decided: dict[tuple[str, str], Any]
    ) -> list[tuple[Request, dict[str, Any]]]:
        """Nothing of the batch is stored: its decided requests are answered `unavailable`
        (retry with the same rid); problems and earlier answers stay as they were."""
        return [
            (
                r,
                error(r.rid, "unavailable", "the hall could not store this; retry")
                if not r.problem and (r.device, r.rid) in decided
                else a,
            )
            for r, a in answers
        ]

    def _publish_answers(self, answers: list[tuple[Request, dict[str, Any]]]) -> None:
        for request, response in answers:
            try:
                self.bus.publish(request.reply_topic, response, correlation=request.correlation)
            except (ValueError, TypeError, OSError) as exc:
                # One answer that cannot be sent must not stop the hall or the others.
                log.error("answer to %s not sent: %s", request.device, exc)

    def _commit(
        self,
        events: list[Event],
        to_store: list[tuple[str, str, float, str]],
        texts: list[str] | None = None,
    ) -> bool:
        touched = {e.data["ticket"] for e in events if "ticket" in e.data}
        try:
            self.store.commit(events, [self.engine.tickets[t] for t in touched], to_store, texts)
            self._set_health(state="ok")
            self._events_since_snapshot += len(events)
            return True
        except Exception as exc:
            # The engine already applied what the disk refused: rebuild it from the disk.
            log.error("commit failed (%s); rebuilding state from the database", exc)
            self._set_health(state="storage_failed", detail=str(exc)[:200])
            self.engine = self._rebuild()
            return False

    # ---- housekeeping -----------------------------------------------------

    def _mark_record(self) -> None:
        """Tell the state directory how far its record goes (never past a commit)."""
        seq = self.store.last_seq()
        if seq != self._marked_seq:
            record.write_marker(
                self.state_dir,
                record.Marker(self.config.site.id, self.store.database_id, seq, time.time()),
            )
            self._marked_seq = seq

    def _housekeeping(self) -> None:
        try:
            self._mark_record()
            self.store.checkpoint()
        except (OSError, sqlite3.Error) as exc:
            log.warning("housekeeping: %s", exc)
        try:
            usage = os.statvfs(self.state_dir)
            free_mb = usage.f_bavail * usage.f_frsize // (1 << 20)
        except OSError:
            return
        low = free_mb < self.config.limits.disk_low_mb
        if low and self.health.get("disk") != "low":
            log.warning("disk low: %d MB free in %s", free_mb, self.state_dir)
        self._set_health(disk="low" if low else "ok", disk_free_mb=free_mb)

    def _prune(self) -> None:
        now = self.clock.now()
        try:
            forgotten = self.store.forget_requests_before(now - REQUEST_MEMORY_S)
            self.answered.difference_update(forgotten)
            before = self.engine.person_keys_expire_before(now)
            erased = self.store.erase_person_keys(before)
            self.engine.forget_person_keys(before)
            if erased:
                log.info("erased the person keys of %d tickets (retention)", erased)
            booked = self.store.erase_appointment_keys(self.engine.day_of(now))
            if booked:
                log.info("erased the person keys of %d past appointments", booked)
            if self._snapshot_seq and self._snapshot_seq not in self.store.snapshot_seqs():
                # the erasure dropped the snapshots holding those keys: take a clean one
                self.write_snapshot("person keys erased")
        except sqlite3.Error as exc:
            log.warning("pruning postponed: %s", exc)

    # ---- snapshots --------------------------------------------------------

    def _rebuild(self) -> Engine:
        rebuilt = load_state(self.config, self.store, self.secret)
        self._snapshot_seq = rebuilt.snapshot_seq
        self._events_since_snapshot = rebuilt.replayed  # many: the loop takes one soon
        return rebuilt.engine

    def write_snapshot(self, why: str) -> bool:
        """Store the engine's state as of the last committed event (the loop calls this
        between batches, so the engine is exactly the fold of the stored events)."""
        try:
            saved = save_snapshot(self.store, self.engine, self.clock.now())
        except (SnapshotError, sqlite3.Error, OSError, ValueError) as exc:
            log.warning("snapshot not written (%s): %s", why, exc)
            self._events_since_snapshot = 0  # try again after as many events
            return False
        self._snapshot_seq, self._events_since_snapshot = saved.seq, 0
        log.info(
            "snapshot at seq %d (%s): %d live tickets, %d KB (%d KB of JSON), "
            "%.0f ms (state %.0f, JSON+zlib %.0f, write %.0f)",
            saved.seq,
            why,
            saved.tickets,
            saved.stored_bytes // 1024,
            saved.json_bytes // 1024,
            saved.state_ms + saved.encode_ms + saved.write_ms,
            saved.state_ms,
            saved.encode_ms,
            saved.write_ms,
        )
        return True

    def _set_health(self, **changes: Any) -> None:
        self.health.update(changes)
        if changes.get("state") == "ok":
            self.health.pop("detail", None)
        public = {k: v for k, v in self.health.items() if k != "disk_free_mb"}
        if public != self._health_published:
            self._health_published = dict(public)
            try:
                self.bus.publish(
                    self.topics.status("hall"), {**self.health, "at": self.clock.now()}, retain=True
                )
            except (ValueError, OSError) as exc:
                log.warning("hall status not published: %s", exc)

    # ---- publishing -------------------------------------------------------

    def _publish_events(self, events: list[Event]) -> None:
        self._send(self._outbox(events), [])

    def _outbox(self, events: list[Event]) -> Outbox:
        """What a round's events make the hall publish: the window states they changed
        (encoded now), the events, the clerks' profiles they changed."""
        windows: set[int] = set()
        profiles: set[int] = set()
        terminals = self.engine.terminals
        for event in events:
            data = event.data
            if data.get("terminal") in terminals:
                windows.add(terminals[data["terminal"]].window)
                if event.type in ("terminal.login", "terminal.logout"):
                    profiles.add(terminals[data["terminal"]].window)
            if isinstance(data.get("window"), int):
                windows.add(data["window"])
        known = self.config.windows
        states = [
            (self.topics.window_state(n), encode(window_state(self.engine, n)))
            for n in sorted(windows)
            if n in known
        ]
        return Outbox(states, events, [n for n in sorted(profiles) if n in known])

    def _send(self, outbox: Outbox, answers: list[tuple[Request, dict[str, Any]]]) -> None:
        """A committed round goes out: the window states first (what every display waits
        for — the LED over the window, the board, the phone pages — and each publish
        before them would wake the broker and its subscribers ahead of them), then the
        answers, then the events in commit order (QoS 0 notifications: what must not be
        missed is in the retained states, QoS 1, and the database), then the profiles."""
        for topic, payload in outbox.states:
            self.bus.publish(topic, payload, retain=True)
        self._publish_answers(answers)
        for event in outbox.events:
            self.bus.publish(self.topics.event(event.type), public_event(self.engine, event), qos=0)
        for number in outbox.profiles:
            self.bus.publish(
                self.topics.window_profile(number), window_profile(self.engine, number), retain=True
            )
        if outbox.events:
            now_mono = time.monotonic()
            if not self._hall_dirty or not self._hall_dirty_since:
                self._hall_dirty, self._hall_dirty_since = True, now_mono
            self._hall_settle_at = now_mono + HALL_STATE_SETTLE_S

    def publish_all_state(self) -> None:
        for number in self.config.windows:
            self.bus.publish(
                self.topics.window_state(number), window_state(self.engine, number), retain=True
            )
        self._hall_dirty = True
        self._maybe_publish_hall_state(force=True)

    def _hall_state_due(self) -> float | None:
        """When hall/state may go out next (monotonic): at most four times a second, and
        HALL_STATE_SETTLE_S after the round that changed it; None: nothing changed."""
        if not self._hall_dirty:
            return None
        settled = min(self._hall_settle_at, self._hall_dirty_since + HALL_STATE_INTERVAL_S)
        return max(self._hall_published_at + HALL_STATE_INTERVAL_S, settled)

    def _idle_wait(self) -> float:
        """How long the loop may wait for the network: until hall/state is due, 0.1 s at most."""
        due = self._hall_state_due()
        return 0.1 if due is None else min(0.1, max(0.0, due - time.monotonic()))

    def _maybe_publish_hall_state(self, force: bool = False) -> None:
        now_mono = time.monotonic()
        due = self._hall_state_due()
        if not force and (due is None or now_mono < due):
            return
        self._hall_dirty, self._hall_dirty_since = False, 0.0
        self._hall_published_at = now_mono
        self.bus.publish(
            self.topics.hall_state, hall_state(self.engine, self.clock.now()), retain=True
        )

    def _tick(self) -> None:
        now = self.clock.now()
        day = self.engine.day_of(now)
        day_ended = bool(self._day) and day != self._day
        if day != self._day:
            if self._day:
                log.info("new day %s: numbering starts again", day)
            self._day, self._hall_dirty = day, True
        events = self.engine.tick(now)
        if events and self._commit(events, []):
            self._publish_events(events)
        if day_ended:
            # The day's end is settled (expired or carried, archived): erase the person
            # keys that are due, then keep that state, so a start-up tomorrow begins here.
            self._prune()
            if self._snapshot_seq != self.store.last_seq():
                self.write_snapshot("day end")


def _echoable(rid: Any) -> bool:
    """A malformed rid may be echoed back only if it is small and plain."""
    return isinstance(rid, str | int) and not isinstance(rid, bool) and len(str(rid)) <= MAX_RID

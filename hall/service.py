"""The hall's MQTT adapter: requests in, committed answers, events and retained state out.

One thread owns the engine and the database. The MQTT network thread only
parses requests and queues them. The owner takes every request waiting (a
batch), decides them in order, commits the batch in ONE SQLite transaction
(group commit: one fsync for many kiosks), and only then answers and publishes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hall.engine import Engine
from hall.model import Event
from hall.store import Store
from hall.views import hall_state, window_profile, window_state
from quhao.clock import Clock
from quhao.config import ConfigError, SiteConfig
from quhao.config import load as load_config
from quhao.mqtt import Bus, Message, TlsFiles
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object, error, ok

log = logging.getLogger("quhao.hall")

MAX_BATCH = 256
HALL_STATE_INTERVAL_S = 0.25  # real seconds between hall/state publications at most
TICK_INTERVAL_S = 1.0
REQUEST_MEMORY_S = 2 * 86400  # how long a rid's answer is kept for retries


@dataclass
class Request:
    device: str
    action: str
    reply_topic: str
    correlation: bytes | None
    rid: Any = None
    payload: dict[str, Any] | None = None
    problem: str | None = None  # why it cannot be decided at all (bad_request)


def rebuild(config: SiteConfig, store: Store, secret: bytes | None = None) -> Engine:
    engine = Engine(config, secret)
    for event in store.events():
        engine.apply(event)
    return engine


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
    ) -> None:
        self.config = config
        self.secret = secret
        self.clock = clock or Clock()
        self.topics = Topics(config.site.id)
        self.store = Store(Path(state_dir) / "hall.sqlite")
        started = time.perf_counter()
        self.engine = rebuild(config, self.store, secret)
        self.answered = self.store.remembered_requests()
        log.info(
            "state rebuilt from %d tickets in %.0f ms",
            len(self.engine.tickets),
            (time.perf_counter() - started) * 1000,
        )
        self.bus = Bus(
            broker,
            "hall",
            username="hall",
            password=password,
            tls=tls,
            availability_topic=self.topics.availability("hall"),
        )
        self.inbox: list[Request] = []
        self._republish = threading.Event()
        self._hall_dirty = True
        self._hall_published_at = 0.0
        self._day = ""
        self.heartbeat = time.monotonic()  # the watchdog looks at this

    # ---- running ----------------------------------------------------------

    def start(self) -> None:
        self.bus.subscribe(self.topics.request_filter, self._on_request)
        self.bus.on_connect(self._on_connect)
        self.bus.connect_inline(required=False)

    def run(
        self,
        stop: threading.Event,
        reload: threading.Event | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        """Serve until stop is set; re-read config_path whenever reload is set."""
        next_tick = time.monotonic()
        next_prune = time.monotonic()
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            if reload is not None and reload.is_set() and config_path is not None:
                reload.clear()
                self.reload(config_path)
            if self._republish.is_set():
                self._republish.clear()
                self.publish_all_state()
            # Network I/O and the queue share this one thread: whatever arrived while
            # the last batch was being committed is read now and forms the next batch.
            self.bus.loop_once(0.0 if self.inbox else 0.1)
            for _ in range(MAX_BATCH):  # paho reads a packet or few per round: drain the socket
                waiting = len(self.inbox)
                self.bus.loop_once(0.0)
                if len(self.inbox) == waiting:
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
                forgotten = self.store.forget_requests_before(self.clock.now() - REQUEST_MEMORY_S)
                self.answered.difference_update(forgotten)
            self._maybe_publish_hall_state()

    def reload(self, path: str | Path) -> bool:
        """Re-read the site file; a broken one is reported and the running config kept."""
        try:
            config = load_config(path)
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
        self.store.close()

    def _on_connect(self) -> None:
        self._republish.set()  # published from the loop, not from inside paho's callback

    # ---- requests ---------------------------------------------------------

    def _on_request(self, message: Message) -> None:
        parsed = self.topics.parse_request(message.topic)
        if parsed is None:
            log.warning("ignored request on malformed topic %r", message.topic)
            return
        device, action = parsed
        own_reply = self.topics.reply(device)
        # Answer only under the asker's own reply topic, whatever it asked for.
        wanted = message.response_topic or own_reply
        reply_topic = (
            wanted if wanted == own_reply or wanted.startswith(own_reply + "/") else own_reply
        )
        request = Request(device, action, reply_topic, message.correlation)
        try:
            payload = decode_object(message.payload)
        except BadPayload as exc:
            request.problem = str(exc)
        else:
            request.rid = payload.get("rid")
            if not isinstance(request.rid, str) or not 1 <= len(request.rid) <= 128:
                request.problem = "field 'rid' must be a string of 1 to 128 characters"
                request.rid = request.rid if isinstance(request.rid, str | int) else None
            request.payload = payload
        self.inbox.append(request)

    def process(self, batch: list[Request]) -> None:
        answers: list[tuple[Request, dict[str, Any]]] = []
        events: list[Event] = []
        to_store: list[tuple[str, str, float, dict[str, Any]]] = []
        decided: dict[tuple[str, str], dict[str, Any]] = {}
        for request in batch:
            if request.problem:
                log.info(
                    "bad request from %s/%s: %s", request.device, request.action, request.problem
                )
                answers.append((request, error(request.rid, "bad_request", request.problem)))
                continue
            key = (request.device, request.rid)
            previous = decided.get(key) or (
                self.store.response(*key) if key in self.answered else None
            )
            if previous is not None:
                answers.append((request, previous))  # a retry: same answer, no effect
                continue
            now = self.clock.now()
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
            decided[key] = response
            to_store.append((request.device, request.rid, now, response))
            events.extend(outcome.events)
            answers.append((request, response))
        if to_store and self._commit(events, to_store):
            self.answered.update((device, rid) for device, rid, _, _ in to_store)
        elif to_store:
            answers = [
                (
                    r,
                    error(r.rid, "unavailable", "the hall could not store this; retry")
                    if not r.problem and (r.device, r.rid) in decided
                    else a,
                )
                for r, a in answers
            ]
            events = []
        for request, response in answers:
            self.bus.publish(request.reply_topic, response, correlation=request.correlation)
        self._publish_events(events)

    def _commit(self, events: list[Event], to_store: list[tuple[str, str, float, dict]]) -> bool:
        touched = {e.data["ticket"] for e in events if "ticket" in e.data}
        try:
            self.store.commit(events, [self.engine.tickets[t] for t in touched], to_store)
            return True
        except Exception:
            # The engine already applied what the disk refused: rebuild it from the disk.
            log.exception("commit failed; rebuilding state from the database")
            self.engine = rebuild(self.config, self.store, self.secret)
            return False

    # ---- publishing -------------------------------------------------------

    def _publish_events(self, events: list[Event]) -> None:
        windows: set[int] = set()
        profiles: set[int] = set()
        for event in events:
            if event.type in ("terminal.login", "terminal.logout"):
                profiles.add(self.engine.terminals[event.data["terminal"]].window)
            # Events are notifications (QoS 0); what must not be missed is in the retained
            # state (QoS 1) and the database.
            self.bus.publish(self.topics.event(event.type), self._public_event(event), qos=0)
            if "terminal" in event.data and event.data["terminal"] in self.engine.terminals:
                windows.add(self.engine.terminals[event.data["terminal"]].window)
            if isinstance(event.data.get("window"), int):
                windows.add(event.data["window"])
        for number in sorted(windows):
            if number in self.config.windows:
                self.bus.publish(
                    self.topics.window_state(number), window_state(self.engine, number), retain=True
                )
        for number in sorted(profiles):
            self._publish_profile(number)
        if events:
            self._hall_dirty = True

    def _publish_profile(self, number: int) -> None:
        if number in self.config.windows:
            self.bus.publish(
                self.topics.window_profile(number), window_profile(self.engine, number), retain=True
            )

    def _public_event(self, event: Event) -> dict[str, Any]:
        payload = {k: v for k, v in event.data.items() if k != "person_key"}
        payload["type"], payload["at"] = event.type, event.at
        ticket = self.engine.tickets.get(event.data.get("ticket", ""))
        if ticket is not None:
            payload["number"] = ticket.number
            payload.setdefault("service", ticket.service)
            payload.setdefault("window", ticket.window)
        return payload

    def publish_all_state(self) -> None:
        for number in self.config.windows:
            self.bus.publish(
                self.topics.window_state(number), window_state(self.engine, number), retain=True
            )
        self._hall_dirty = True
        self._maybe_publish_hall_state(force=True)

    def _maybe_publish_hall_state(self, force: bool = False) -> None:
        now_mono = time.monotonic()
        if not force and (
            not self._hall_dirty or now_mono - self._hall_published_at < HALL_STATE_INTERVAL_S
        ):
            return
        self._hall_dirty = False
        self._hall_published_at = now_mono
        self.bus.publish(
            self.topics.hall_state, hall_state(self.engine, self.clock.now()), retain=True
        )

    def _tick(self) -> None:
        now = self.clock.now()
        day = self.engine.day_of(now)
        if day != self._day:
            if self._day:
                log.info("new day %s: numbering starts again", day)
            self._day, self._hall_dirty = day, True
        events = self.engine.tick(now)
        if events and self._commit(events, []):
            self._publish_events(events)

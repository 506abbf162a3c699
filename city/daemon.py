"""`quhao city`: every hall's feed from the city broker into PostgreSQL, exactly once.

One thread owns the state — the MQTT socket (paho driven inline, as in the hall) and the
ingest core (city/ingest.py). The database connection has a thread of its own
(city/dbworker.py) that writes one batch while the loop reads the next: each round the
loop reads whatever arrived, and when the worker is free and `batch_events` are ready or
`flush_ms` has passed it hands over one batch, written in one transaction (group
commit, as in the hall); what arrives meanwhile forms the next. Then it asks the halls
with a gap for what is missing — a window of pages per hall, re-asked when lost — and
while it is far behind it stops taking the live feed and pulls pages instead (the
ingest core's doc says when; docs/city.md why).

The trust boundary (a hall is potentially hostile too): a hall is who its topic says —
the city broker's ACL lets each hall's bridge user publish only under its own
`city/halls/{site}/…` — and only halls of the allow-list are taken. The payload must be
a feed batch (quhao/messages/feed.py) of at most 256 KB whose `site` is the topic's
hall, with plausible times; anything else is counted and dropped, and logged at most
once every `COMPLAIN_S` per hall and reason, so a flood fills neither the log nor the database.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from city.check import Refused, check_feed
from city.dbworker import DbWorker, Done
from city.ingest import Batch, Ingest
from city.schema import check_version, ensure_partitions
from city.writer import HallInfo, PositionMoved, Writer
from quhao.config import ConfigError
from quhao.config import load as load_site
from quhao.config.city import CityConfig, resolve
from quhao.messages.feed import MAX_PAGE
from quhao.mqtt import Bus, Message, TlsFiles
from quhao.topics import (
    CITY_FEED_FILTER,
    CITY_REPLAY_FILTER,
    city_feed_request,
    parse_city_feed,
)
from quhao.wire import encode, shown

log = logging.getLogger("quhao.city")

CITY_USER = "city"
COMPLAIN_S = 10.0
RECONNECT_S = 2.0
PARTITIONS_EVERY_S = 3600.0
REQUESTS_EVERY_S = 0.1  # gaps are looked for at least this often (every hall: O(halls))
MODE_EVERY_S = 0.5  # live feed or pull: decided this often
STATUS_EVERY_S = 10.0  # a line in the log on how it goes, while there is work
DRAIN_MAX = 500  # socket reads in one round before the loop sees to the rest


def hall_info(config: CityConfig, base: Path) -> list[HallInfo]:
    """What the city registers of each allowed hall (its site file, when it has one)."""
    out = []
    for hall in config.halls:
        path = resolve(base, hall.site_file)
        if path is None:
            out.append(HallInfo(hall.id, hall.name or hall.id))
            continue
        site = load_site(path)  # ConfigError names the file and line
        if site.site.id != hall.id:
            raise ConfigError.one(
                str(path), None, "site.id", f"is {site.site.id!r}, the city lists {hall.id!r}"
            )
        out.append(
            HallInfo(
                hall.id,
                hall.name or site.site.name,
                str(site.site.timezone),
                [(s.id, s.name, s.department, s.prefix) for s in site.services.values()],
                [(n, w.name, list(w.services)) for n, w in site.windows.items()],
                [(s.id, s.name) for s in site.staff.values()],
            )
        )
    return out


def freeze_startup() -> None:
    """What start-up made (modules, pydantic's validators, psycopg, paho) lives as long as
    the process: frozen out of the collector's sight. Catching up, the events held make
    full collections frequent, and each walked all of it too: parsing, the ingest and
    the projection cost a quarter more CPU (cli/bench/citycore.py). Garbage is collected
    first so none is kept for good."""
    gc.collect()
    gc.freeze()


@dataclass
class CityStats:
    messages: int = 0
    written: int = 0
    batches: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    write_ms: float = 0.0


class CityDaemon:
    def __init__(
        self,
        config: CityConfig,
        base: Path,
        *,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.config = config
        self.allowed = config.hall_ids
        writer = Writer(config.city.database)
        check_version(writer.conn)
        writer.register(hall_info(config, base))
        positions = writer.positions()
        self.ingest = Ingest(
            {h: (done, db) for h, (done, db, _) in positions.items()},
            ready_max=2 * config.city.batch_events,
        )
        for hall, (_, _, stopped) in positions.items():
            if stopped:
                self.ingest.stop(hall, stopped)
                log.error("hall %s stays stopped: %s", hall, stopped)
        self.db = DbWorker(writer)
        self.bus = Bus(
            config.city.broker, CITY_USER, username=CITY_USER, password=password, tls=tls
        )
        # Replay answers always; the live feed only while the city keeps up (`_mode`).
        self.bus.subscribe(CITY_REPLAY_FILTER, self._on_feed)
        self.bus.on_connect(self._on_connect)
        self.live = False
        self.stats = CityStats()
        self.heartbeat = time.monotonic()
        self._probe = False
        self._complained: dict[tuple[str, str], float] = {}
        self._next_flush = 0.0
        self._next_partitions = 0.0
        self._next_requests = 0.0
        self._next_mode = 0.0
        self._next_status = 0.0
        self._written_at_status = 0
        self._writing = False  # a batch is with the database worker
        self._alone: list[str] = []  # halls to write one by one (a batch was refused)
        self._writer_down_until = 0.0
        self._answers = 0  # feed messages since the last round of requests

    def start(self) -> None:
        self.bus.connect_inline(required=False)

    def close(self) -> None:
        self.bus.stop()
        self.db.close()

    def _on_connect(self) -> None:
        self._probe = True  # from the loop: ask every hall how far it is

    # ---- the loop -----------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        freeze_startup()
        flush_s = self.config.city.flush_ms / 1000
        limit = self.config.city.batch_events
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            busy = self._writing or self.ingest.pending() > 0
            self.bus.loop_once(0.01 if busy else 0.1)
            for _ in range(DRAIN_MAX):  # drain what the socket holds, up to a batch
                before = self.stats.messages
                self.bus.loop_once(0.0)
                if self.stats.messages == before:
                    break
                if self.ingest.pending() >= limit and not self._writing:
                    break
            for done in self.db.results():
                self._finished(done)
            now = time.monotonic()
            connected = self.bus.connected.is_set()
            if self._probe and connected:
                self._probe = False
                self.ingest.probe_all()
                self._next_requests = 0.0
            if now >= self._next_mode:
                self._next_mode = now + MODE_EVERY_S
                self._mode(connected)
            if not self._writing and now >= self._writer_down_until:
                pending = self.ingest.pending()
                if self._alone:
                    self._write(self.ingest.take(limit, hall=self._alone.pop()), split=False)
                elif pending and (pending >= limit or now >= self._next_flush):
                    self._next_flush = now + flush_s
                    self._write(self.ingest.take(limit), split=True)
                elif not pending:
                    self._next_flush = now + flush_s
            if connected and (self._answers or now >= self._next_requests):
                # Right after answers (a page in, the next out: a window, not a timer),
                # and every REQUESTS_EVERY_S for the pages lost on the way.
                self._answers = 0
                self._next_requests = now + REQUESTS_EVERY_S
                for request in self.ingest.requests(now):
                    self._ask(request.hall, request.after, request.limit)
            if now >= self._next_partitions and not self.db.busy:
                self._next_partitions = now + PARTITIONS_EVERY_S
                ahead = functools.partial(_partitions_ahead, months=self.config.city.months_ahead)
                self.db.submit("partitions", ahead)
            if now >= self._next_status:
                self._next_status = now + STATUS_EVERY_S
                self._status(now)

    def _status(self, now: float) -> None:
        """Once every STATUS_EVERY_S while there is anything to say: how it goes."""
        written, self._written_at_status = (
            self.stats.written - self._written_at_status,
            self.stats.written,
        )
        behind = self.ingest.behind()
        if not written and not behind:
            return
        feeds = self.ingest.halls
        late = sorted(feeds, key=lambda h: feeds[h].done - feeds[h].wanted())[:3]
        stats = self.ingest.stats
        log.info(
            "%s: %d events written in %g s, %d behind; pages asked %d, lost %d, in flight %d; "
            "furthest behind: %s",
            "live" if self.live else "pulling",
            written,
            STATUS_EVERY_S,
            behind,
            stats.replays_asked,
            stats.replays_lost,
            sum(len(f.asked) for f in feeds.values()),
            ", ".join(
                f"{h} {feeds[h].done}/{feeds[h].wanted()}"
                + (
                    f" (silent, next ask in {feeds[h].retry_at - now:.0f} s)"
                    if feeds[h].retry_at > now
                    else ""
                )
                for h in late
                if feeds[h].wanted() > feeds[h].done
            )
            or "none",
        )

    def _mode(self, connected: bool) -> None:
        """Take the live feed while keeping up; pull pages while far behind."""
        if not connected:
            return
        live = self.ingest.mode()
        if live == self.live:
            return
        self.live = live
        if live:
            self.bus.subscribe(CITY_FEED_FILTER, self._on_feed)
            log.info("taking the live feed (%d events behind)", self.ingest.behind())
        else:
            self.bus.unsubscribe(CITY_FEED_FILTER)
            log.info(
                "%d events behind: pulling pages from the halls' logs until caught up",
                self.ingest.behind(),
            )

    def _ask(self, hall: str, after: int, limit: int = MAX_PAGE) -> None:
        self.bus.publish(city_feed_request(hall), encode({"after": after, "limit": limit}))

    # ---- writing (the database worker does it; results come back here) --------

    def _write(self, batch: Batch | None, *, split: bool) -> None:
        if batch is None:
            return
        self._writing = True
        self.db.submit(("write", batch, split), lambda w: w.write(batch))

    def _finished(self, done: Done) -> None:
        if done.tag == "partitions":
            if done.error is not None:
                log.warning("partitions ahead not made: %s", done.error)
            return
        if done.tag == "reconnect":
            self._reconnected(done)
            return
        if isinstance(done.tag, tuple) and done.tag[0] == "stop":
            if done.error is not None:
                log.warning("could not record that hall %s stopped: %s", done.tag[1], done.error)
            return
        _, batch, split = done.tag
        self._writing = False
        exc = done.error
        if exc is None:
            self.ingest.committed(batch)
            self.stats.batches += 1
            self.stats.written += len(batch.events)
            self.stats.write_ms += done.seconds * 1000
            log.debug(
                "wrote %d events of %d halls in %.1f ms",
                len(batch.events),
                len(batch.upto),
                done.seconds * 1000,
            )
            return
        self.ingest.failed(batch)
        if isinstance(exc, PositionMoved):
            log.warning("positions moved under this writer (%s); starting over from them", exc)
            for hall, position in exc.positions.items():
                self.ingest.reset(hall, max(position, 0))
        elif isinstance(exc, psycopg.OperationalError):
            log.error("database unavailable (%s); retrying in %g s", exc, RECONNECT_S)
            self._writer_down_until = float("inf")  # until the reconnect job says
            self.db.submit("reconnect", _reconnect)
        elif isinstance(exc, psycopg.Error) and split and len(batch.upto) > 1:
            # One hall's rows must not keep the others out: each hall alone.
            self._alone = sorted(batch.upto, reverse=True)
        elif isinstance(exc, psycopg.Error):
            for hall in batch.upto:
                why = f"its events cannot be written: {str(exc).splitlines()[0][:200]}"
                log.error("hall %s stopped: %s", hall, why)
                self.ingest.stop(hall, why)
                self._stop_hall(hall, why)
        else:
            log.error("writing a batch failed: %r", exc)
            self._writer_down_until = time.monotonic() + RECONNECT_S

    def _reconnected(self, done: Done) -> None:
        if done.error is not None:
            log.warning("database still unavailable: %s", done.error)
            self._writer_down_until = time.monotonic() + RECONNECT_S
            # the next try after RECONNECT_S, from the worker (the loop does not wait)
            self.db.submit("reconnect", _reconnect_later)
            return
        self._writer_down_until = 0.0
        for hall, (position, _, _) in done.value.items():
            if hall in self.ingest.halls and self.ingest.halls[hall].done != position:
                self.ingest.reset(hall, position)
        log.info("database connection back")

    def _stop_hall(self, hall: str, why: str) -> None:
        self.db.submit(("stop", hall), lambda w: w.stop_hall(hall, why))

    # ---- from the broker (paho callback, in the owner thread) ----------------

    def _on_feed(self, message: Message) -> None:
        self.stats.messages += 1
        if message.topic.endswith("/replay"):
            self._answers += 1  # a page in: the next may go out at once
        hall = parse_city_feed(message.topic)
        if hall is None or hall not in self.allowed:
            self._drop(hall or "?", "not an allowed hall", message.topic)
            return
        if message.retain:
            self._drop(hall, "retained", "")
            return
        batch = check_feed(hall, message.payload)
        if isinstance(batch, Refused):
            self._drop(hall, batch.why, batch.detail)
            return
        stopped = self.ingest.receive(hall, batch, time.monotonic())
        if stopped:
            log.error("hall %s stopped: %s; its feed is not taken until resolved", hall, stopped)
            self._stop_hall(hall, stopped)

    def _drop(self, hall: str, why: str, detail: Any) -> None:
        self.stats.dropped[why] += 1
        now = time.monotonic()
        if now - self._complained.get((hall, why), -COMPLAIN_S) >= COMPLAIN_S:
            self._complained[(hall, why)] = now
            log.warning(
                "feed of %s dropped (%s): %s [dropped so far: %s]",
                shown(hall),
                why,
                shown(detail, 160),
                dict(self.stats.dropped),
            )


# ---- database jobs (run in the worker thread) -----------------------------------


def _partitions_ahead(writer: Writer, months: int) -> None:
    with writer.conn.transaction():
        ensure_partitions(writer.conn, dt.date.today(), months)


def _reconnect(writer: Writer) -> dict[str, tuple[int, str | None, str | None]]:
    writer.reconnect()
    return writer.positions()


def _reconnect_later(writer: Writer) -> dict[str, tuple[int, str | None, str | None]]:
    time.sleep(RECONNECT_S)
    return _reconnect(writer)

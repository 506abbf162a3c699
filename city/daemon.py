"""`quhao city`: every hall's feed from the city broker into PostgreSQL, exactly once.

One thread owns everything — the MQTT socket (paho driven inline, as in the hall), the
ingest core (city/ingest.py) and the database connection (city/writer.py). Each round
it reads whatever arrived, and when `batch_events` are ready or `flush_ms` has passed it
writes one batch in one transaction; what arrives meanwhile waits in the socket and
forms the next batch (group commit, as in the hall). Then it asks the halls with a gap
for what is missing, one request per hall at a time.

The trust boundary (a hall is potentially hostile too): a hall is who its topic says —
the city broker's ACL lets each hall's bridge user publish only under its own
`city/halls/{site}/…` — and only halls of the allow-list are taken. The payload must be
a feed batch (quhao/messages/feed.py) of at most 256 KB whose `site` is the topic's
hall, with plausible times; anything else is counted and dropped, and logged at most
once every `COMPLAIN_S` per hall and reason, so a flood fills neither the log nor the database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pydantic import ValidationError

from city.ingest import Batch, Ingest
from city.schema import check_version, ensure_partitions
from city.writer import HallInfo, PositionMoved, Writer
from quhao.config import ConfigError
from quhao.config import load as load_site
from quhao.config.city import CityConfig, resolve
from quhao.messages.feed import MAX_FEED_BYTES, MAX_PAGE, FeedBatch
from quhao.mqtt import Bus, Message, TlsFiles
from quhao.topics import CITY_FEED_FILTER, city_feed_request, parse_city_feed
from quhao.wire import encode, shown

log = logging.getLogger("quhao.city")

CITY_USER = "city"
COMPLAIN_S = 10.0
RECONNECT_S = 2.0
PARTITIONS_EVERY_S = 3600.0
REQUESTS_EVERY_S = 0.1  # gaps are looked for this often (every hall: O(halls))


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
        self.writer = Writer(config.city.database)
        check_version(self.writer.conn)
        self.writer.register(hall_info(config, base))
        positions = self.writer.positions()
        self.ingest = Ingest({h: (done, db) for h, (done, db, _) in positions.items()})
        for hall, (_, _, stopped) in positions.items():
            if stopped:
                self.ingest.stop(hall, stopped)
                log.error("hall %s stays stopped: %s", hall, stopped)
        self.bus = Bus(
            config.city.broker, CITY_USER, username=CITY_USER, password=password, tls=tls
        )
        self.bus.subscribe(CITY_FEED_FILTER, self._on_feed)
        self.bus.on_connect(self._on_connect)
        self.stats = CityStats()
        self.heartbeat = time.monotonic()
        self._probe = False
        self._complained: dict[tuple[str, str], float] = {}
        self._next_flush = 0.0
        self._next_partitions = 0.0
        self._next_requests = 0.0
        self._writer_down_until = 0.0

    def start(self) -> None:
        self.bus.connect_inline(required=False)

    def close(self) -> None:
        self.bus.stop()
        self.writer.close()

    def _on_connect(self) -> None:
        self._probe = True  # from the loop: ask every hall how far it is

    # ---- the loop -----------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        flush_s = self.config.city.flush_ms / 1000
        limit = self.config.city.batch_events
        while not stop.is_set():
            self.heartbeat = now = time.monotonic()
            self.bus.loop_once(0.02 if self.ingest.pending() else 0.1)
            for _ in range(1000):  # drain what the socket holds, up to a batch
                before = self.stats.messages
                self.bus.loop_once(0.0)
                if self.stats.messages == before or self.ingest.pending() >= limit:
                    break
            now = time.monotonic()
            if self._probe and self.bus.connected.is_set():
                self._probe = False
                for hall in sorted(self.allowed):
                    feed = self.ingest.hall(hall)
                    if not feed.stopped:
                        self._ask(hall, feed.run_end())
            pending = self.ingest.pending()
            if pending and (pending >= limit or now >= self._next_flush):
                self._next_flush = now + flush_s
                self.flush(limit)
            elif not pending:
                self._next_flush = now + flush_s
            if self.bus.connected.is_set() and now >= self._next_requests:
                self._next_requests = now + REQUESTS_EVERY_S
                for request in self.ingest.requests(now):
                    self._ask(request.hall, request.after, request.limit)
            if now >= self._next_partitions:
                self._next_partitions = now + PARTITIONS_EVERY_S
                self._partitions_ahead()

    def _ask(self, hall: str, after: int, limit: int = MAX_PAGE) -> None:
        self.bus.publish(city_feed_request(hall), encode({"after": after, "limit": limit}))

    def _partitions_ahead(self) -> None:
        try:
            with self.writer.conn.transaction():
                ensure_partitions(self.writer.conn, dt.date.today(), self.config.city.months_ahead)
        except psycopg.Error as exc:
            log.warning("partitions ahead not made: %s", exc)

    # ---- writing --------------------------------------------------------------

    def flush(self, limit: int) -> None:
        if time.monotonic() < self._writer_down_until:
            return
        batch = self.ingest.take(limit)
        if batch is not None:
            self._write(batch, split=True)

    def _write(self, batch: Batch, *, split: bool) -> None:
        started = time.perf_counter()
        try:
            self.writer.write(batch)
        except PositionMoved as exc:
            log.warning("positions moved under this writer (%s); starting over from them", exc)
            self.ingest.failed(batch)
            for hall, done in exc.positions.items():
                self.ingest.reset(hall, max(done, 0))
            return
        except psycopg.OperationalError as exc:
            self.ingest.failed(batch)
            self._reconnect(exc)
            return
        except psycopg.Error as exc:
            self.ingest.failed(batch)
            if split and len(batch.upto) > 1:
                # One hall's rows must not keep the others out: each hall alone.
                for hall in sorted(batch.upto):
                    alone = self.ingest.take(len(batch.events), hall=hall)
                    if alone is not None:
                        self._write(alone, split=False)
                return
            for hall in batch.upto:
                why = f"its events cannot be written: {str(exc).splitlines()[0][:200]}"
                log.error("hall %s stopped: %s", hall, why)
                self.ingest.stop(hall, why)
                self._stop_hall(hall, why)
            return
        self.ingest.committed(batch)
        self.stats.batches += 1
        self.stats.written += len(batch.events)
        self.stats.write_ms += (time.perf_counter() - started) * 1000
        log.debug(
            "wrote %d events of %d halls in %.1f ms",
            len(batch.events),
            len(batch.upto),
            (time.perf_counter() - started) * 1000,
        )

    def _stop_hall(self, hall: str, why: str) -> None:
        try:
            self.writer.stop_hall(hall, why)
        except psycopg.Error as exc:
            log.warning("could not record that hall %s stopped: %s", hall, exc)

    def _reconnect(self, exc: Exception) -> None:
        log.error("database unavailable (%s); retrying in %g s", exc, RECONNECT_S)
        self._writer_down_until = time.monotonic() + RECONNECT_S
        with contextlib.suppress(psycopg.Error):
            self.writer.close()
        try:
            self.writer = Writer(self.config.city.database)
            for hall, (done, _, _) in self.writer.positions().items():
                if hall in self.ingest.halls and self.ingest.halls[hall].done != done:
                    self.ingest.reset(hall, done)
            log.info("database connection back")
        except psycopg.Error as again:
            log.warning("database still unavailable: %s", again)

    # ---- from the broker (paho callback, in the owner thread) ----------------

    def _on_feed(self, message: Message) -> None:
        self.stats.messages += 1
        hall = parse_city_feed(message.topic)
        if hall is None or hall not in self.allowed:
            self._drop(hall or "?", "not an allowed hall", message.topic)
            return
        if message.retain:
            self._drop(hall, "retained", "")
            return
        payload = message.payload
        if len(payload) > MAX_FEED_BYTES:
            self._drop(hall, "malformed", f"payload is {len(payload)} bytes")
            return
        if b"\\u0000" in payload:  # PostgreSQL keeps no NUL in text nor jsonb
            self._drop(hall, "malformed", "a NUL character")
            return
        try:
            # One pass in pydantic's parser: JSON, UTF-8, types, every bound (the model's).
            batch = FeedBatch.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            self._drop(hall, "malformed", f"{where}: {first['msg']}")
            return
        if batch.site != hall:
            self._drop(hall, "identity", f"a batch of {shown(batch.site)} on {hall}'s topic")
            return
        if batch.events and max(e.seq for e in batch.events) > batch.head:
            self._drop(hall, "implausible", "an event beyond the hall's head")
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

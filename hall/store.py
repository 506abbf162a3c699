"""The hall's durable state: SQLite in WAL mode, committed before anything is answered.

- `events`: the append-only log; the engine's state is its fold, rebuilt on start.
- `tickets`: a projection of each ticket (for reports and for the database's own
  guarantee): UNIQUE(day, origin_service, number) means no number can ever be
  given twice, whatever the code above does.
- `requests`: the stored response to each (device, rid), so a repeated request
  returns the same answer and changes nothing.
- `snapshots`: the engine's state as of an event (hall/snapshot.py), the newest few:
  start-up loads the newest that is usable and replays only the events after it.
  Events are indexed by time and by day (`EVENT_DAY`), so a day's report and the
  erasure of person keys read one range, not the whole log.

Person keys (HMAC pseudonyms) are kept only inside `ticket.issued` events, for the
quota, and erased (`erase_person_keys`) once no quota window can need them; the raw
ID number never reaches the hall. `secure_delete` overwrites what is erased, and the
WAL is kept small, so an erased key does not linger in free pages or an old log.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hall.model import Event, Ticket
from hall.record import RecordError, new_database_id

SCHEMA_VERSION = 1

# The day an event belongs to, for the report: the ticket's id ("2026-11-23/A001") for
# ticket events and alerts, the day for refusals. Indexed, so one day is one range scan.
EVENT_DAY = "coalesce(json_extract(data, '$.ticket'), json_extract(data, '$.day'))"
ERASE_MARGIN_S = 2 * 86400  # an erasure looks this far behind the previous one (clock steps)

DayEvent = tuple[float, str, dict[str, Any]]  # (at, type, data) of one logged event

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq  INTEGER PRIMARY KEY,
    at   REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
    id              TEXT PRIMARY KEY,
    day             TEXT NOT NULL,
    origin_service  TEXT NOT NULL,
    number          TEXT NOT NULL,
    service         TEXT NOT NULL,
    status          TEXT NOT NULL,
    priority        TEXT,
    kiosk           TEXT NOT NULL,
    override_staff  TEXT,
    issued_at       REAL NOT NULL,
    first_called_at REAL,
    called_at       REAL,
    finished_at     REAL,
    window          INTEGER,
    staff           TEXT,
    recalls         INTEGER NOT NULL DEFAULT 0,
    path            TEXT NOT NULL DEFAULT '[]',
    rating          INTEGER,
    rating_state    TEXT NOT NULL DEFAULT 'none',
    rating_reason   TEXT NOT NULL DEFAULT '',
    UNIQUE (day, origin_service, number)
);
CREATE INDEX IF NOT EXISTS tickets_day ON tickets(day, service);
CREATE TABLE IF NOT EXISTS requests (
    device   TEXT NOT NULL,
    rid      TEXT NOT NULL,
    at       REAL NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (device, rid)
);
CREATE INDEX IF NOT EXISTS requests_at ON requests(at);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE INDEX IF NOT EXISTS events_day ON events({EVENT_DAY});
-- bookings whose person key is still held: few (today's and later), found without a scan
CREATE INDEX IF NOT EXISTS events_appointment_keys ON events(json_extract(data, '$.day'))
    WHERE type = 'appointment.booked' AND json_extract(data, '$.person_key') IS NOT NULL;
CREATE TABLE IF NOT EXISTS snapshots (
    seq               INTEGER PRIMARY KEY,
    at                REAL NOT NULL,
    format            INTEGER NOT NULL,
    person_keys_since REAL,
    state             BLOB NOT NULL
);
"""

TICKET_COLUMNS = (
    "id",
    "day",
    "origin_service",
    "number",
    "service",
    "status",
    "priority",
    "kiosk",
    "override_staff",
    "issued_at",
    "first_called_at",
    "called_at",
    "finished_at",
    "window",
    "staff",
    "recalls",
    "path",
    "rating",
    "rating_state",
    "rating_reason",
)
_UPSERT = (
    f"INSERT INTO tickets ({', '.join(TICKET_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in TICKET_COLUMNS)}) "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in TICKET_COLUMNS if c != "id")
)


WAL_AUTOCHECKPOINT_PAGES = 256  # ~1 MB: the log never grows to refill a freed disk
JOURNAL_SIZE_LIMIT = 1 << 20  # after a checkpoint the WAL file is cut back to this


class Store:
    def __init__(self, path: str | Path, site: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # on disk before it is answered
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute("PRAGMA secure_delete=ON")  # erased person keys are overwritten
            self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self.db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            self.db.executescript(_SCHEMA)
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise RecordError(
                f"{self.path}: cannot use the database: {exc}; restore the latest backup "
                "(`quhao restore`) or move the file aside"
            ) from exc
        if "schema" not in meta:
            self._set_meta("schema", str(SCHEMA_VERSION))
        elif int(meta["schema"]) != SCHEMA_VERSION:
            raise RecordError(
                f"{self.path}: schema {meta['schema']}, this hall knows {SCHEMA_VERSION}"
            )
        if site is not None and meta.get("site", site) != site:
            raise RecordError(f"{self.path}: the record of site {meta['site']!r}, not {site!r}")
        self.database_id = meta.get("database_id") or new_database_id()
        if "database_id" not in meta:
            self._set_meta("database_id", self.database_id)
        if site is not None and "site" not in meta:
            self._set_meta("site", site)

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def last_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def checkpoint(self) -> None:
        """Move the WAL into the database and cut the log file back.

        Never waits: with a reader open (a backup copying) TRUNCATE would block the hall's
        loop for up to busy_timeout; it returns busy at once and a later round truncates."""
        self.db.execute("PRAGMA busy_timeout=0")
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.db.execute("PRAGMA busy_timeout=5000")

    def erase_person_keys(self, issued_before: float) -> int:
        """Drop the person key from every ticket issued before this time (PIPL: keep the
        minimum). What reports need — times, service, priority — stays. Every snapshot
        that holds such a key is rewritten without it (deleted, if it cannot be read);
        returns the events changed.

        Only the time since the previous erasure (less a margin) is searched, through the
        index on time, so a year of events is not read every hour."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'keys_erased_before'").fetchone()
            since = float(row[0]) - ERASE_MARGIN_S if row else float("-inf")
            cursor = db.execute(
                "UPDATE events SET data = json_remove(data, '$.person_key') "
                "WHERE at >= ? AND at < ? AND type = 'ticket.issued' "
                "AND json_extract(data, '$.person_key') IS NOT NULL",
                (since, issued_before),
            )
            erased = cursor.rowcount
            self._erase_from_snapshots(issued_before)
            if not row or float(row[0]) < issued_before:
                self._set_meta("keys_erased_before", repr(issued_before))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return erased

    def erase_appointment_keys(self, before_day: str) -> int:
        """Drop the person key from every booking of a day before `before_day` (its slot's
        day has ended: no check-in can need it), and from every snapshot holding one;
        returns the bookings changed."""
        from hall import snapshot

        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            erased = db.execute(
                "UPDATE events SET data = json_remove(data, '$.person_key') "
                "WHERE type = 'appointment.booked' "
                "AND json_extract(data, '$.person_key') IS NOT NULL "
                "AND json_extract(data, '$.day') < ?",
                (before_day,),
            ).rowcount
            if erased:  # snapshots taken since then hold no such key: the engine forgot them
                for seq, blob in db.execute("SELECT seq, state FROM snapshots").fetchall():
                    try:
                        data = snapshot.forget_appointment_keys(snapshot.decode(blob), before_day)
                    except (snapshot.SnapshotError, KeyError, TypeError, ValueError):
                        db.execute("DELETE FROM snapshots WHERE seq = ?", (seq,))
                        continue
                    db.execute(
                        "UPDATE snapshots SET state = ? WHERE seq = ?", (snapshot.encode(data), seq)
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return erased

    def _erase_from_snapshots(self, issued_before: float) -> None:
        from hall import snapshot  # the snapshot format lives there (it needs the engine)

        rows = self.db.execute(
            "SELECT seq, state FROM snapshots WHERE person_keys_since < ?", (issued_before,)
        ).fetchall()
        for seq, blob in rows:
            try:
                data = snapshot.forget_person_keys(snapshot.decode(blob), issued_before)
                since = snapshot.person_keys_since(data)
            except (snapshot.SnapshotError, KeyError, TypeError, ValueError):
                self.db.execute("DELETE FROM snapshots WHERE seq = ?", (seq,))
                continue
            self.db.execute(
                "UPDATE snapshots SET state = ?, person_keys_since = ? WHERE seq = ?",
                (snapshot.encode(data), since, seq),
            )

    # ---- snapshots ----------------------------------------------------------

    def save_snapshot(
        self,
        seq: int,
        at: float,
        format: int,
        state: bytes,
        person_keys_since: float | None,
        keep: int = 3,
    ) -> None:
        """Store the engine's state as of event `seq`; keep only the newest `keep`."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR REPLACE INTO snapshots (seq, at, format, person_keys_since, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (seq, at, format, person_keys_since, state),
            )
            db.execute(
                "DELETE FROM snapshots WHERE seq NOT IN "
                "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                (keep,),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def latest_snapshot(self, below: int | None = None) -> StoredSnapshot | None:
        """The newest snapshot (older than event `below`, if given), or None."""
        row = self.db.execute(
            "SELECT seq, at, format, state FROM snapshots WHERE seq < ? ORDER BY seq DESC LIMIT 1",
            (below if below is not None else 1 << 62,),
        ).fetchone()
        return (
            StoredSnapshot(int(row[0]), float(row[1]), int(row[2]), bytes(row[3])) if row else None
        )

    def snapshot_seqs(self) -> list[int]:
        return [int(r[0]) for r in self.db.execute("SELECT seq FROM snapshots ORDER BY seq")]

    def events_after(self, seq: int) -> Iterator[Event]:
        """The events after `seq`, in order: what a snapshot at `seq` has not seen."""
        for at, kind, data in self.db.execute(
            "SELECT at, type, data FROM events WHERE seq > ? ORDER BY seq", (seq,)
        ):
            yield Event(kind, at, json.loads(data))

    def remembered_requests(self) -> set[tuple[str, str]]:
        """Every (device, rid) with a stored answer: lets the hall skip a query per request."""
        return {(d, r) for d, r in self.db.execute("SELECT device, rid FROM requests")}

    def close(self) -> None:
        self.db.close()

    def events(self) -> Iterator[Event]:
        return self.events_after(0)

    def response(self, device: str, rid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT response FROM requests WHERE device = ? AND rid = ?", (device, rid)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def commit(
        self,
        events: Iterable[Event],
        tickets: Iterable[Ticket],
        responses: Iterable[tuple[str, str, float, dict[str, Any] | str]],
        texts: list[str] | None = None,
    ) -> None:
        """One transaction: the events, the tickets they touched, the answers given.

        A caller that has made the JSON already passes it: `texts`, each event's data in
        order, and an answer as its text instead of the dict; it is stored as given."""
        events = list(events)
        if texts is None:
            texts = [_json(e.data) for e in events]
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO events (at, type, data) VALUES (?, ?, ?)",
                [(e.at, e.type, text) for e, text in zip(events, texts, strict=True)],
            )
            db.executemany(_UPSERT, [_ticket_row(t) for t in tickets])
            db.executemany(
                "INSERT INTO requests (device, rid, at, response) VALUES (?, ?, ?, ?)",
                [
                    (d, r, at, resp if isinstance(resp, str) else _json(resp))
                    for d, r, at, resp in responses
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            # A full disk may have rolled the transaction back already: say what failed.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def forget_requests_before(self, at: float) -> list[tuple[str, str]]:
        """Stored answers are kept long enough for any retry; then dropped."""
        return [
            (d, r)
            for d, r in self.db.execute(
                "DELETE FROM requests WHERE at < ? RETURNING device, rid", (at,)
            )
        ]


@dataclass(frozen=True)
class StoredSnapshot:
    seq: int  # the last event it has folded in
    at: float  # hall time it was taken
    format: int
    state: bytes  # zlib-compressed JSON (hall/snapshot.py)


def day_events(db: sqlite3.Connection, day: str) -> list[DayEvent]:
    """(at, type, data) of every event of one day's tickets and of that day's refusals,
    in commit order: one range scan of the `events_day` index, however long the log."""
    return [
        (at, kind, json.loads(data))
        for at, kind, data in db.execute(
            f"SELECT at, type, data FROM events WHERE {EVENT_DAY} >= ? AND {EVENT_DAY} < ? "
            "ORDER BY seq",
            (day, day + "0"),  # "2026-11-23" and "2026-11-23/…", and nothing after ("/" < "0")
        )
    ]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _ticket_row(t: Ticket) -> tuple[Any, ...]:
    return (
        t.id,
        t.day,
        t.origin_service,
        t.number,
        t.service,
        t.status.value,
        t.priority,
        t.kiosk,
        t.override_staff,
        t.issued_at,
        t.first_called_at,
        t.called_at,
        t.finished_at,
        t.window,
        t.staff,
        t.recalls,
        json.dumps(t.path),
        t.rating,
        t.rating_state,
        t.rating_reason,
    )

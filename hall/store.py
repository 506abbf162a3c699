"""The hall's durable state: SQLite in WAL mode, committed before anything is answered.

- `events`: the append-only log; the engine's state is its fold, rebuilt on start.
- `tickets`: a projection of each ticket (for reports and for the database's own
  guarantee): UNIQUE(day, origin_service, number) means no number can ever be
  given twice, whatever the code above does.
- `requests`: the stored response to each (device, rid), so a repeated request
  returns the same answer and changes nothing.

Person keys (HMAC pseudonyms) are kept only inside `ticket.issued` events, for the
quota; the raw ID number never reaches the hall.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hall.model import Event, Ticket

SCHEMA_VERSION = 1

_SCHEMA = """
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


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a ticket is on disk before it is answered
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema {row[0]}, this hall knows {SCHEMA_VERSION}")

    def remembered_requests(self) -> set[tuple[str, str]]:
        """Every (device, rid) with a stored answer: lets the hall skip a query per request."""
        return {(d, r) for d, r in self.db.execute("SELECT device, rid FROM requests")}

    def close(self) -> None:
        self.db.close()

    def events(self) -> Iterator[Event]:
        for at, kind, data in self.db.execute("SELECT at, type, data FROM events ORDER BY seq"):
            yield Event(kind, at, json.loads(data))

    def response(self, device: str, rid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT response FROM requests WHERE device = ? AND rid = ?", (device, rid)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def commit(
        self,
        events: Iterable[Event],
        tickets: Iterable[Ticket],
        responses: Iterable[tuple[str, str, float, dict[str, Any]]],
    ) -> None:
        """One transaction: the events, the tickets they touched, the answers given."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO events (at, type, data) VALUES (?, ?, ?)",
                [(e.at, e.type, json.dumps(e.data, ensure_ascii=False)) for e in events],
            )
            db.executemany(_UPSERT, [_ticket_row(t) for t in tickets])
            db.executemany(
                "INSERT INTO requests (device, rid, at, response) VALUES (?, ?, ?, ?)",
                [(d, r, at, json.dumps(resp, ensure_ascii=False)) for d, r, at, resp in responses],
            )
            db.execute("COMMIT")
        except BaseException:
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

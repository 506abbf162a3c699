"""The kiosk's durable record for offline issuing: SQLite, the hall's rules (WAL,
`synchronous=FULL`: on disk before the ticket prints).

- `blocks`: the lease blocks the hall granted (written when the grant arrives, before a
  number of it is used), with their state (held, releasing, released);
- `printed`: every ticket this kiosk printed — online ones for the per-person quota,
  offline ones also to hand over, each with the rid of the `issue` it was printed
  instead of (`abandoned_rid`, when the hall did not answer one); an offline ticket is
  written before it prints;
- `abandoned`: the rids of requests the kiosk gave up on and printed nothing for (or
  whose offline ticket failed to print), until the hall has acknowledged them — written
  before the citizen is told anything.

Person keys only (HMAC pseudonyms), never an ID number; `forget` erases them by the
hall's retention rule (`privacy.person_key_days`), `secure_delete` overwriting them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kiosk.lease import Block, Printed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    day     TEXT NOT NULL,
    service TEXT NOT NULL,
    first   INTEGER NOT NULL,
    last    INTEGER NOT NULL,
    state   TEXT NOT NULL,
    PRIMARY KEY (day, service, first)
);
CREATE TABLE IF NOT EXISTS printed (
    rid        TEXT PRIMARY KEY,
    day        TEXT NOT NULL,
    service    TEXT NOT NULL,
    number     INTEGER,
    issued_at  REAL NOT NULL,
    person_key TEXT,
    age        INTEGER,
    priority   TEXT,
    state      TEXT NOT NULL,
    abandoned_rid TEXT,
    UNIQUE (day, service, number)
);
CREATE TABLE IF NOT EXISTS abandoned (
    rid TEXT PRIMARY KEY,
    at  REAL NOT NULL
);
"""
_PRINTED = "rid, day, service, number, issued_at, person_key, age, priority, state, abandoned_rid"


class OfflineStore:
    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # on disk before the ticket prints
        self.db.execute("PRAGMA secure_delete=ON")  # erased person keys are overwritten
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(printed)")}
        if "abandoned_rid" not in columns:  # a record from before abandoned rids were kept
            self.db.execute("ALTER TABLE printed ADD COLUMN abandoned_rid TEXT")

    def blocks(self) -> list[Block]:
        rows = self.db.execute("SELECT day, service, first, last, state FROM blocks ORDER BY first")
        return [Block(*row) for row in rows]

    def printed(self) -> list[Printed]:
        rows = self.db.execute(f"SELECT {_PRINTED} FROM printed ORDER BY issued_at")
        return [Printed(*row) for row in rows]

    def abandoned(self) -> list[tuple[str, float]]:
        """Given-up rids not yet acknowledged by the hall, oldest first."""
        rows = self.db.execute("SELECT rid, at FROM abandoned ORDER BY at, rowid")
        return [(rid, at) for rid, at in rows]

    def grant(self, block: Block) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO blocks (day, service, first, last, state) VALUES (?,?,?,?,?)",
            (block.day, block.service, block.first, block.last, block.state),
        )

    def set_blocks(self, day: str, service: str, state: str, only: str | None = None) -> None:
        self.db.execute(
            "UPDATE blocks SET state = ? WHERE day = ? AND service = ? "
            "AND (? IS NULL OR state = ?)",
            (state, day, service, only, only),
        )

    def record(self, p: Printed) -> None:
        """One ticket, durably: raises (sqlite3.Error) rather than let it print unrecorded.
        The UNIQUE number is the database's own guarantee against printing one twice.
        A ticket naming a given-up request takes it over in the same commit: the request
        goes to the hall with the ticket, no longer alone."""
        with self._transaction():
            self.db.execute(
                f"INSERT INTO printed ({_PRINTED}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    p.rid,
                    p.day,
                    p.service,
                    p.number,
                    p.issued_at,
                    p.person_key,
                    p.age,
                    p.priority,
                    p.state,
                    p.abandoned_rid,
                ),
            )
            if p.abandoned_rid is not None:
                self.db.execute("DELETE FROM abandoned WHERE rid = ?", (p.abandoned_rid,))

    def abandon(self, rid: str, at: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO abandoned (rid, at) VALUES (?, ?)", (rid, at))

    def void(self, rid: str, abandoned: tuple[str, float] | None) -> None:
        """A ticket that did not print, and the request it named, given up alone now."""
        with self._transaction():
            self.db.execute("UPDATE printed SET state = 'voided' WHERE rid = ?", (rid,))
            if abandoned is not None:
                self.abandon(*abandoned)

    def acknowledged(self, rids: list[str]) -> None:
        """Given-up rids the hall has taken: forgotten."""
        self.db.executemany("DELETE FROM abandoned WHERE rid = ?", [(r,) for r in rids])

    def set_state(self, rids: list[str], state: str) -> None:
        self.db.executemany(
            "UPDATE printed SET state = ? WHERE rid = ?", [(state, r) for r in rids]
        )

    def forget(self, before: float, cutoff_day: str, abandoned_before: float) -> None:
        """As `Leases.forget`: the record of days past the retention, and their keys;
        given-up rids older than the hall would take them."""
        with self._transaction():
            self.db.execute(
                "UPDATE printed SET person_key = NULL WHERE issued_at < ? AND state = 'issued'",
                (before,),
            )
            self.db.execute(
                "DELETE FROM printed WHERE issued_at < ? AND state != 'issued'", (before,)
            )
            self.db.execute(
                "DELETE FROM blocks WHERE day < ? AND state = 'released'", (cutoff_day,)
            )
            self.db.execute("DELETE FROM abandoned WHERE at < ?", (abandoned_before,))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

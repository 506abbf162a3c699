"""Writes the ingest core's batches into PostgreSQL, exactly once (psycopg 3).

One transaction per batch:
1. lock the batch's halls' rows in `feed_positions` and check each is still where the
   batch starts (`done`): another writer or a lost commit would show here, and the batch
   is refused whole (the daemon reloads the positions and asks for what is missing);
2. one binary COPY per table: straight into `events`, `ratings`, `alerts` and
   `appointments` (keyed by the event: the position check makes each row new, and the
   keys refuse a batch that is not: `_COPY`) and the batch's new tickets (in a
   savepoint: `_insert_tickets`); into a temporary staging table for changes to older
   tickets, new cases and changes to cases, each followed by one `UPDATE … FROM` or
   `INSERT … SELECT … ON CONFLICT DO NOTHING`;
3. move `done` up, every hall of the batch in one statement.

Either all of it is committed or none: the position and the rows cannot disagree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import psycopg

from city.ingest import Batch
from city.project import Projection, project
from city.schema import Conn, ensure_partition

log = logging.getLogger("quhao.city.writer")

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_tickets (LIKE tickets) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_changes (
    hall text, id text, day date, status text, service text, set_window boolean,
    "window" integer, set_staff boolean, staff text, first_called_at double precision,
    called_at double precision, finished_at double precision, recalls integer,
    transfers integer, set_rating boolean, rating integer, rating_state text,
    rating_reason text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_cases (
    hall text, id text, ticket text, day date, opened_s double precision,
    due_s double precision, level integer, reason text, service text, "window" integer,
    staff text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_case_changes (
    hall text, id text, state text, closed_s double precision, note text, by_staff text,
    appeal text, updated_s double precision
) ON COMMIT DELETE ROWS;
"""


# In a binary COPY PostgreSQL reads each field with its column's own binary receive
# function; the types given to psycopg only choose how it formats each value. The
# projection (city/project.py) hands over a timestamptz and a jsonb in their binary form
# already — µs since 2000-01-01 as an int, a version byte and the JSON text as bytes —
# so psycopg writes them with its C dumpers for int8 and bytea: no `datetime` and no
# Python dumper per event.
_FORMATTED_AS = {"timestamptz": "int8", "jsonb": "bytea"}


def _columns(spec: str) -> tuple[str, list[str]]:
    """ "name type, …" -> the column list and the types psycopg formats them as."""
    pairs = [column.split() for column in spec.split(",")]
    names = ", ".join(name for name, _ in pairs)
    return names, [_FORMATTED_AS.get(kind, kind) for _, kind in pairs]


TICKET_COLUMNS, TICKET_TYPES = _columns(
    "hall text, id text, day date, number text, origin_service text, service text, "
    "status text, priority text, kiosk text, override_staff text, issued_at float8, "
    'first_called_at float8, called_at float8, finished_at float8, "window" int4, '
    "staff text, recalls int4, transfers int4, rating int4, rating_state text, "
    "rating_reason text"
)

_APPLY_CHANGES = """
UPDATE tickets t SET
    status = COALESCE(s.status, t.status),
    service = COALESCE(s.service, t.service),
    "window" = CASE WHEN s.set_window THEN s."window" ELSE t."window" END,
    staff = CASE WHEN s.set_staff THEN s.staff ELSE t.staff END,
    first_called_at = COALESCE(t.first_called_at, s.first_called_at),
    called_at = COALESCE(s.called_at, t.called_at),
    finished_at = COALESCE(s.finished_at, t.finished_at),
    recalls = t.recalls + s.recalls,
    transfers = t.transfers + s.transfers,
    rating = CASE WHEN s.set_rating THEN s.rating ELSE t.rating END,
    rating_state = COALESCE(s.rating_state, t.rating_state),
    rating_reason = COALESCE(s.rating_reason, t.rating_reason)
FROM stage_changes s
WHERE t.hall = s.hall AND t.id = s.id AND t.day = s.day
"""

# Every COPY is binary: PostgreSQL parses no text for the times, numbers and days (the
# binary int4 dumper wraps a number beyond its range: city/project.py bounds them).
#
# Straight into its table, for the tables keyed by the event (hall, seq): a batch holds
# each (hall, seq) once and only after the hall's position, checked under lock in the
# same transaction, so none can be there yet; if one were (a database changed by hand),
# the key refuses the batch and the hall is written alone, or stopped (city/daemon.py):
# never a row twice, never one skipped. Then the staging tables (`_STAGING`).
_COPY = {
    "events": ("events", "hall text, seq int8, at timestamptz, at_s float8, type text, "
               "ticket text, data jsonb"),
    "ratings": ("ratings", "hall text, seq int8, ticket text, day date, at timestamptz, "
                'level int4, reason text, service text, "window" int4, staff text'),
    "alerts": ("alerts", "hall text, seq int8, type text, at timestamptz, day date, "
               'ticket text, service text, "window" int4, staff text, level int4, '
               "reason text, waited_s float8"),
    "appointments": ("appointments", "hall text, seq int8, kind text, day date, "
                     "service text, slot_start timestamptz, slot_end timestamptz, "
                     "at timestamptz, ticket text, kiosk text"),
    "new_tickets": ("tickets", ""),
    "tickets": ("stage_tickets", ""),
    "changes": ("stage_changes", "hall text, id text, day date, status text, service text, "
                'set_window bool, "window" int4, set_staff bool, staff text, '
                "first_called_at float8, called_at float8, finished_at float8, "
                "recalls int4, transfers int4, set_rating bool, rating int4, "
                "rating_state text, rating_reason text"),
    "cases": ("stage_cases", "hall text, id text, ticket text, day date, opened_s float8, "
              'due_s float8, level int4, reason text, service text, "window" int4, '
              "staff text"),
    "case_changes": ("stage_case_changes", "hall text, id text, state text, "
                     "closed_s float8, note text, by_staff text, appeal text, "
                     "updated_s float8"),
}  # fmt: skip
COPY_SQL = {
    name: (
        f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)",
        types,
    )
    for name, (table, spec) in _COPY.items()
    for names, types in [_columns(spec) if spec else (TICKET_COLUMNS, TICKET_TYPES)]
}
EVENT_TYPES = COPY_SQL["events"][1]
# Staged, then one statement each, in this order (a case opened and updated in one batch
# is inserted first).
_FROM_STAGE = {
    # A ticket is keyed by its id: should a hall ever issue one id twice, the first stays.
    "tickets": f"""
INSERT INTO tickets ({TICKET_COLUMNS}) SELECT {TICKET_COLUMNS} FROM stage_tickets
ON CONFLICT DO NOTHING""",
    "changes": _APPLY_CHANGES,
    "cases": """
INSERT INTO cases (hall, id, ticket, day, opened, due, level, reason, service, "window",
    staff)
SELECT hall, id, ticket, day, to_timestamp(opened_s), to_timestamp(due_s), level, reason,
    service, "window", staff
FROM stage_cases ON CONFLICT DO NOTHING""",
    "case_changes": """
UPDATE cases c SET
    state = COALESCE(s.state, c.state),
    closed = COALESCE(c.closed, to_timestamp(s.closed_s)),
    note = COALESCE(s.note, c.note),
    by_staff = COALESCE(s.by_staff, c.by_staff),
    appeal = COALESCE(s.appeal, c.appeal),
    updated = to_timestamp(s.updated_s)
FROM stage_case_changes s
WHERE c.hall = s.hall AND c.id = s.id""",
}
# A batch's changes are a few thousand rows at most: each is looked up by its key.
_LOOK_UP = (
    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)


class PositionMoved(Exception):
    """A hall's position in the database is not where the batch starts."""

    def __init__(self, positions: dict[str, int]) -> None:
        super().__init__(", ".join(f"{h} at {d}" for h, d in positions.items()))
        self.positions = positions


class Writer:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Conn = self._connect()
        self.months: set[dt.date] = set()
        self.reissued = 0  # batches with a ticket id issued again (logged once)

    def _connect(self) -> Conn:
        conn: Conn = psycopg.connect(self.dsn)
        conn.execute(_STAGING.encode())
        conn.commit()
        return conn

    def reconnect(self) -> None:
        """A new connection in place of one that failed."""
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        self.conn = self._connect()

    def close(self) -> None:
        self.conn.close()

    # ---- halls ----------------------------------------------------------------

    def positions(self) -> dict[str, tuple[int, str | None, str | None]]:
        """hall -> (last seq written, its database id, why it is stopped)."""
        rows = self.conn.execute("SELECT hall, done, db, stopped FROM feed_positions").fetchall()
        self.conn.commit()
        return {h: (int(d), db, stopped) for h, d, db, stopped in rows}

    def register(self, halls: Iterable[HallInfo]) -> None:
        """Every allowed hall, with what its site file says (names, departments…)."""
        with self.conn.transaction():
            for hall in halls:
                self.conn.execute(
                    "INSERT INTO halls (id, name, timezone) VALUES (%s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                    "timezone = excluded.timezone",
                    (hall.id, hall.name, hall.timezone),
                )
                self.conn.execute(
                    "INSERT INTO feed_positions (hall) VALUES (%s) ON CONFLICT DO NOTHING",
                    (hall.id,),
                )
                with self.conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO services (hall, id, name, department, prefix) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (hall, id) DO UPDATE SET "
                        "name = excluded.name, department = excluded.department, "
                        "prefix = excluded.prefix",
                        [(hall.id, *s) for s in hall.services],
                    )
                    cur.executemany(
                        "INSERT INTO windows (hall, number, name, services) VALUES (%s, %s, %s, "
                        "%s) ON CONFLICT (hall, number) DO UPDATE SET name = excluded.name, "
                        "services = excluded.services",
                        [(hall.id, *w) for w in hall.windows],
                    )
                    cur.executemany(
                        "INSERT INTO clerks (hall, id, name) VALUES (%s, %s, %s) "
                        "ON CONFLICT (hall, id) DO UPDATE SET name = excluded.name",
                        [(hall.id, *c) for c in hall.clerks],
                    )

    def stop_hall(self, hall: str, why: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE feed_positions SET stopped = %s, updated = now() WHERE hall = %s",
                (why, hall),
            )

    # ---- batches --------------------------------------------------------------

    def ensure_months(self, months: Iterable[dt.date]) -> None:
        missing = [m for m in months if m not in self.months]
        if not missing:
            return
        with self.conn.transaction():
            for month in sorted(missing):
                ensure_partition(self.conn, month)
        self.months.update(missing)

    def write(self, batch: Batch) -> Projection:
        """The batch, in one transaction; PositionMoved if a hall is not where it starts."""
        rows = project(batch.events)
        self.ensure_months(rows.months)
        conn = self.conn
        direct = {
            "events": rows.events,
            "ratings": rows.ratings,
            "alerts": rows.alerts,
            "appointments": rows.appointments,
        }
        staged = {
            "changes": rows.changes,
            "cases": rows.cases,
            "case_changes": rows.case_changes,
        }
        with conn.transaction():
            halls = sorted(batch.upto)
            found = dict(
                conn.execute(
                    "SELECT hall, done FROM feed_positions WHERE hall = ANY(%s) "
                    "ORDER BY hall FOR UPDATE",
                    (halls,),
                ).fetchall()
            )
            moved = {h: int(found.get(h, -1)) for h in halls if found.get(h) != batch.upto[h][0]}
            if moved:
                raise PositionMoved(moved)
            with conn.cursor() as cur:
                for name, table_rows in direct.items():
                    _copy(cur, name, table_rows)
                if rows.changes or rows.case_changes:
                    # A staging table has no statistics: the planner would join the whole
                    # tickets table instead of looking each row up (ANALYZE of the
                    # staging table cost more than the lookups: 2 µs an event live).
                    cur.execute(_LOOK_UP)
                if rows.new_tickets and not _insert_tickets(conn, cur, rows.new_tickets):
                    log.log(
                        logging.DEBUG if self.reissued else logging.WARNING,
                        "a ticket id issued again (halls %s): the first row kept",
                        ", ".join(halls),
                    )
                    self.reissued += 1
                for name, table_rows in staged.items():
                    if _copy(cur, name, table_rows):
                        cur.execute(_FROM_STAGE[name])
                cur.execute(
                    "UPDATE feed_positions p SET done = u.done, db = u.db, updated = now() "
                    "FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS u(hall, done, db) "
                    "WHERE p.hall = u.hall",
                    (
                        halls,
                        [batch.upto[h][1] for h in halls],
                        [batch.dbs.get(h) for h in halls],
                    ),
                )
        return rows


def _insert_tickets(conn: Conn, cur: psycopg.Cursor[Any], rows: list[tuple[Any, ...]]) -> bool:
    """The tickets issued in the batch, straight into `tickets` (in a savepoint: half the
    CPU of staging them and `INSERT … ON CONFLICT`, which checks every row). Should one be
    there already — a hall that issued one id twice — the first stays: staged and
    inserted `ON CONFLICT DO NOTHING`, as before; False then."""
    try:
        with conn.transaction():
            _copy(cur, "new_tickets", rows)
        return True
    except psycopg.errors.UniqueViolation:
        _copy(cur, "tickets", rows)
        cur.execute(_FROM_STAGE["tickets"])
        return False


def _copy(cur: psycopg.Cursor[Any], name: str, rows: list[tuple[Any, ...]]) -> bool:
    if not rows:
        return False
    sql, types = COPY_SQL[name]
    with cur.copy(sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
    return True


class HallInfo:
    """What the city registers of a hall: from its site file, or just its id."""

    def __init__(
        self,
        id: str,
        name: str = "",
        timezone: str = "Asia/Shanghai",
        services: list[tuple[str, str, str, str]] | None = None,
        windows: list[tuple[int, str, list[str]]] | None = None,
        clerks: list[tuple[str, str]] | None = None,
    ) -> None:
        self.id, self.name, self.timezone = id, name or id, timezone
        self.services = services or []  # (id, name, department, prefix)
        self.windows = windows or []  # (number, name, service ids)
        self.clerks = clerks or []  # (staff id, name)

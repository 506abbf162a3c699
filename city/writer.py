"""Writes the ingest core's batches into PostgreSQL, exactly once (psycopg 3).

One transaction per batch:
1. lock the batch's halls' rows in `feed_positions` and check each is still where the
   batch starts (`done`): another writer or a lost commit would show here, and the batch
   is refused whole (the daemon reloads the positions and asks for what is missing);
2. COPY the events and the ticket changes into temporary staging tables, then
   `INSERT … SELECT … ON CONFLICT DO NOTHING` into the partitioned tables (a repeat
   can never double a row), UPDATE the older tickets the batch changed;
3. ratings, cases, alerts from the staged rows; move `done` up.

Either all of it is committed or none: the position and the rows cannot disagree.
"""

from __future__ import annotations

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
CREATE TEMP TABLE IF NOT EXISTS stage_events (
    hall text, seq bigint, at timestamptz, at_s double precision, type text, ticket text,
    data jsonb
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_changes (
    hall text, id text, day date, status text, service text, set_window boolean,
    "window" integer, set_staff boolean, staff text, first_called_at double precision,
    called_at double precision, finished_at double precision, recalls integer,
    transfers integer, set_rating boolean, rating integer, rating_state text,
    rating_reason text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_tickets (LIKE tickets) ON COMMIT DELETE ROWS;
"""

TICKET_COLUMNS = (
    "hall, id, day, number, origin_service, service, status, priority, kiosk, "
    'override_staff, issued_at, first_called_at, called_at, finished_at, "window", staff, '
    "recalls, transfers, rating, rating_state, rating_reason"
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


class PositionMoved(Exception):
    """A hall's position in the database is not where the batch starts."""

    def __init__(self, positions: dict[str, int]) -> None:
        super().__init__(", ".join(f"{h} at {d}" for h, d in positions.items()))
        self.positions = positions


class Writer:
    def __init__(self, dsn: str, followup_days: int = 15) -> None:
        self.dsn = dsn
        self.followup_days = followup_days
        self.conn: Conn = psycopg.connect(dsn)
        self.conn.execute(_STAGING.encode())
        self.conn.commit()
        self.months: set[dt.date] = set()

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
        rows = project(batch.events, self.followup_days)
        self.ensure_months(rows.months)
        conn = self.conn
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
                with cur.copy(
                    "COPY stage_events (hall, seq, at, at_s, type, ticket, data) FROM STDIN"
                ) as copy:
                    for row in rows.events:
                        copy.write_row(row)
                cur.execute(
                    "INSERT INTO events (hall, seq, at, at_s, type, ticket, data) "
                    "SELECT hall, seq, at, at_s, type, ticket, data FROM stage_events "
                    "ON CONFLICT DO NOTHING"
                )
                if rows.new_tickets:
                    with cur.copy(f"COPY stage_tickets ({TICKET_COLUMNS}) FROM STDIN") as copy:
                        for row in rows.new_tickets:
                            copy.write_row(row)
                    cur.execute(
                        f"INSERT INTO tickets ({TICKET_COLUMNS}) SELECT {TICKET_COLUMNS} "
                        "FROM stage_tickets ON CONFLICT DO NOTHING"
                    )
                if rows.changes:
                    with cur.copy("COPY stage_changes FROM STDIN") as copy:
                        for row in rows.changes:
                            copy.write_row(row)
                    cur.execute(_APPLY_CHANGES)
                _insert(
                    cur,
                    'ratings (hall, seq, ticket, day, at, level, reason, service, "window", staff)',
                    rows.ratings,
                )
                _insert(
                    cur,
                    'cases (hall, ticket, day, opened, due, level, reason, service, "window", '
                    "staff)",
                    rows.cases,
                )
                _insert(
                    cur,
                    'alerts (hall, seq, type, at, day, ticket, service, "window", staff, level, '
                    "reason, waited_s)",
                    rows.alerts,
                )
                cur.executemany(
                    "UPDATE feed_positions SET done = %s, db = %s, updated = now() WHERE hall = %s",
                    [(last, batch.dbs.get(h), h) for h, (_, last) in batch.upto.items()],
                )
        return rows


def _insert(cur: psycopg.Cursor[Any], target: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    width = len(rows[0])
    placeholders = ", ".join(["%s"] * width)
    cur.executemany(f"INSERT INTO {target} VALUES ({placeholders}) ON CONFLICT DO NOTHING", rows)


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

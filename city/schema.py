"""The city database (PostgreSQL): tables a city analyst can query, and their migrations.

`quhao city migrate --config city.toml` applies what is missing (`MIGRATIONS`, in order,
each in its own transaction, recorded in `schema_migrations`) and makes the monthly
partitions from last month to `months_ahead` ahead; the daemon makes them ahead too,
and any month a batch needs (an old day replayed) before it writes.

Tables (docs/city.md has every column):
- `halls`, `services`, `windows`, `clerks`: who is who, from each hall's site file;
- `events`: every event of every hall as the hall's feed sent it (no person keys),
  primary key (hall, seq, at) — the hall's sequence number is unique per hall (an
  event's time never changes, and the writer takes each (hall, seq) once, checked
  against `feed_positions` in the same transaction); partitioned by month of `at`;
- `tickets`: one row per ticket, folded from the events (city/project.py), partitioned
  by month of the ticket's day;
- `ratings` (好差评), `cases` (the hall's own follow-up of each bad rating: its
  deadline, state, appeal, last note — migration 2; rows of migration 1 were opened from
  `alert.bad_rating` with a flat `followup_days` deadline and keep `from_hall` false),
  `alerts` (bad ratings, waits past the limit), `appointments` (migration 3: each
  booking, check-in and no-show with its slot's day and service — no person, no booking
  reference);
- `feed_positions`: per hall the last sequence written and the hall's database id.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg

log = logging.getLogger("quhao.city.schema")

Conn = psycopg.Connection[Any]

PARTITIONED = {"events": "at", "tickets": "day"}  # table -> its range key (month parts)

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "the city's tables",
        """
CREATE TABLE halls (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    timezone    text NOT NULL DEFAULT 'Asia/Shanghai',
    registered  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE services (
    hall        text NOT NULL REFERENCES halls(id),
    id          text NOT NULL,
    name        text NOT NULL,
    department  text NOT NULL DEFAULT '',
    prefix      text NOT NULL DEFAULT '',
    PRIMARY KEY (hall, id)
);
CREATE TABLE windows (
    hall        text NOT NULL REFERENCES halls(id),
    number      integer NOT NULL,
    name        text NOT NULL DEFAULT '',
    services    text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (hall, number)
);
CREATE TABLE clerks (
    hall        text NOT NULL REFERENCES halls(id),
    id          text NOT NULL,
    name        text NOT NULL,
    PRIMARY KEY (hall, id)
);
CREATE TABLE feed_positions (
    hall        text PRIMARY KEY REFERENCES halls(id),
    done        bigint NOT NULL DEFAULT 0,
    db          text,
    stopped     text,
    updated     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE events (
    hall        text NOT NULL,
    seq         bigint NOT NULL,
    at          timestamptz NOT NULL,
    at_s        double precision NOT NULL,
    type        text NOT NULL,
    ticket      text,
    data        jsonb NOT NULL,
    written     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hall, seq, at)
) PARTITION BY RANGE (at);
CREATE INDEX events_ticket ON events (hall, ticket) WHERE ticket IS NOT NULL;
CREATE INDEX events_type_at ON events (type, at);
CREATE TABLE tickets (
    hall            text NOT NULL,
    id              text NOT NULL,
    day             date NOT NULL,
    number          text NOT NULL,
    origin_service  text NOT NULL,
    service         text NOT NULL,
    status          text NOT NULL,
    priority        text,
    kiosk           text,
    override_staff  text,
    issued_at       double precision NOT NULL,
    first_called_at double precision,
    called_at       double precision,
    finished_at     double precision,
    "window"        integer,
    staff           text,
    recalls         integer NOT NULL DEFAULT 0,
    transfers       integer NOT NULL DEFAULT 0,
    rating          integer,
    rating_state    text NOT NULL DEFAULT 'none',
    rating_reason   text NOT NULL DEFAULT '',
    PRIMARY KEY (hall, id, day)
) PARTITION BY RANGE (day);
CREATE INDEX tickets_day ON tickets (day, hall, service);
CREATE TABLE ratings (
    hall        text NOT NULL,
    seq         bigint NOT NULL,
    ticket      text NOT NULL,
    day         date NOT NULL,
    at          timestamptz NOT NULL,
    level       integer,
    reason      text NOT NULL DEFAULT '',
    service     text,
    "window"    integer,
    staff       text,
    PRIMARY KEY (hall, seq)
);
CREATE INDEX ratings_day ON ratings (day, hall);
CREATE TABLE cases (
    hall        text NOT NULL,
    ticket      text NOT NULL,
    day         date NOT NULL,
    opened      timestamptz NOT NULL,
    due         timestamptz NOT NULL,
    level       integer NOT NULL,
    reason      text NOT NULL DEFAULT '',
    service     text,
    "window"    integer,
    staff       text,
    closed      timestamptz,
    note        text NOT NULL DEFAULT '',
    PRIMARY KEY (hall, ticket)
);
CREATE INDEX cases_open ON cases (due) WHERE closed IS NULL;
CREATE TABLE alerts (
    hall        text NOT NULL,
    seq         bigint NOT NULL,
    type        text NOT NULL,
    at          timestamptz NOT NULL,
    day         date,
    ticket      text,
    service     text,
    "window"    integer,
    staff       text,
    level       integer,
    reason      text,
    waited_s    double precision,
    PRIMARY KEY (hall, seq)
);
CREATE INDEX alerts_at ON alerts (at, hall);
""",
    ),
    (
        2,
        "cases from the hall's own follow-up (case.* events)",
        """
ALTER TABLE cases ADD COLUMN id text;
ALTER TABLE cases ADD COLUMN state text NOT NULL DEFAULT 'open';
ALTER TABLE cases ADD COLUMN appeal text NOT NULL DEFAULT 'none';
ALTER TABLE cases ADD COLUMN by_staff text;
ALTER TABLE cases ADD COLUMN updated timestamptz;
ALTER TABLE cases ADD COLUMN from_hall boolean NOT NULL DEFAULT true;
UPDATE cases SET from_hall = false,
    state = CASE WHEN closed IS NULL THEN 'open' ELSE 'resolved' END;
CREATE UNIQUE INDEX cases_id ON cases (hall, id);
-- (day, hall, id): a day's range for the reports, and one exact row for the writer's
-- UPDATE of a ticket (with (day, hall, service) the planner picked it on a young
-- partition and then filtered a whole hall-day per ticket).
DROP INDEX tickets_day;
CREATE INDEX tickets_day ON tickets (day, hall, id);
-- The report reads the events table for refusals only (the other types have tables of
-- their own): index those, not every event's type (a third of the insert's work).
DROP INDEX events_type_at;
CREATE INDEX events_refused ON events (at) WHERE type = 'ticket.refused';
""",
    ),
    (
        3,
        "appointments: bookings, check-ins and no-shows per slot",
        """
-- One row per appointment event (appointment.booked, .checked_in, .no_show): the slot's
-- day and service, never the person nor the online hall's booking reference (neither
-- leaves the hall). Bookings, check-ins and no-shows of a day are counts of its rows.
CREATE TABLE appointments (
    hall        text NOT NULL,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    day         date NOT NULL,
    service     text NOT NULL,
    slot_start  timestamptz,
    slot_end    timestamptz,
    at          timestamptz NOT NULL,
    ticket      text,
    kiosk       text,
    PRIMARY KEY (hall, seq)
);
CREATE INDEX appointments_day ON appointments (day, hall);
-- The appointment events the city already holds (the feed let them out before this).
CREATE FUNCTION pg_temp.quhao_day(t text) RETURNS date LANGUAGE plpgsql AS $$
BEGIN RETURN t::date; EXCEPTION WHEN others THEN RETURN NULL; END $$;
INSERT INTO appointments (hall, seq, kind, day, service, slot_start, slot_end, at, ticket,
    kiosk)
SELECT hall, seq, substr(type, 13), pg_temp.quhao_day(data->>'day'), data->>'service',
    CASE WHEN jsonb_typeof(data->'start') = 'number' THEN
        CASE WHEN (data->>'start')::double precision BETWEEN 946684800 AND 4102444800
             THEN to_timestamp((data->>'start')::double precision) END END,
    CASE WHEN jsonb_typeof(data->'end') = 'number' THEN
        CASE WHEN (data->>'end')::double precision BETWEEN 946684800 AND 4102444800
             THEN to_timestamp((data->>'end')::double precision) END END,
    at, data->>'ticket', data->>'kiosk'
FROM events
WHERE type IN ('appointment.booked', 'appointment.checked_in', 'appointment.no_show')
  AND pg_temp.quhao_day(data->>'day') IS NOT NULL AND data->>'service' IS NOT NULL;
DROP FUNCTION pg_temp.quhao_day(text);
""",
    ),
    (
        4,
        "one index a ticket, none an event's ticket: what every write paid and nothing read",
        """
-- Every event paid for an index by (hall, ticket) that nothing reads: the city's report
-- takes a ticket from `tickets`, and a ticket's own events are found by its hall within
-- the month's partition (the key's first column).
DROP INDEX events_ticket;
-- A ticket had two indexes on the same three columns: the key (hall, id, day) and
-- (day, hall, id) for the reports' day ranges. One key in the second order serves both
-- (the writer's UPDATE looks up all three columns).
ALTER TABLE tickets DROP CONSTRAINT tickets_pkey;
ALTER TABLE tickets ADD PRIMARY KEY (day, hall, id);
DROP INDEX tickets_day;
""",
    ),
]


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def partition_name(table: str, month: dt.date) -> str:
    return f"{table}_{month:%Y_%m}"


def ensure_partition(conn: Conn, month: dt.date) -> None:
    """The month's partition of every partitioned table (in the caller's transaction)."""
    first = month_start(month)
    after = next_month(first)
    for table, key in PARTITIONED.items():
        low: str = first.isoformat()
        high: str = after.isoformat()
        if key == "at":  # timestamptz: months in UTC, the hall's time is in the row anyway
            low, high = f"{low} 00:00+00", f"{high} 00:00+00"
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {partition_name(table, first)} "
            f"PARTITION OF {table} FOR VALUES FROM ('{low}') TO ('{high}')"
        )


def ensure_partitions(conn: Conn, today: dt.date, months_ahead: int) -> list[dt.date]:
    """Partitions from last month to `months_ahead` after this one."""
    month = month_start(month_start(today) - dt.timedelta(days=1))
    made = []
    for _ in range(months_ahead + 2):
        ensure_partition(conn, month)
        made.append(month)
        month = next_month(month)
    return made


def applied(conn: Conn) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version integer PRIMARY KEY, what text NOT NULL, "
        "applied timestamptz NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(dsn: str, today: dt.date, months_ahead: int = 2) -> list[str]:
    """Apply the missing migrations and make the partitions; what was done, a line each."""
    done: list[str] = []
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7166)")  # one migrate at a time
            current = applied(conn)
            for version, what, sql in MIGRATIONS:
                if version <= current:
                    continue
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, what) VALUES (%s, %s)",
                    (version, what),
                )
                done.append(f"migration {version}: {what}")
        with conn.transaction():
            months = ensure_partitions(conn, today, months_ahead)
        done.append(f"partitions {months[0]:%Y-%m} to {months[-1]:%Y-%m}")
    return done


def current_version() -> int:
    return MIGRATIONS[-1][0]


def check_version(conn: Conn) -> None:
    """Refuse a database that is not migrated to what this code writes."""
    have = applied(conn)
    conn.commit()
    if have != current_version():
        raise RuntimeError(
            f"the city database is at schema {have}, this program writes "
            f"{current_version()}: run `quhao city migrate --config city.toml`"
        )

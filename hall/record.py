"""Which record a state directory holds, so the hall never silently starts a new one.

A hall's database is the day's record: tickets on paper in citizens' hands are in it. If
it vanished (deleted, truncated to 0 bytes, replaced by another hall's or an old copy)
and the hall simply started empty, it would print today's numbers again from 001.

So the state directory carries a marker beside the database, `hall.record.json`:
the site id, the database's own id (a UUID stored inside it too) and the last event
sequence known to be committed. At start:

- no marker and no database: a new record starts (a fresh installation);
- no marker but a database: the database is adopted (an installation from before markers);
- a marker, and the database missing, empty, foreign (another id or site), damaged, or
  behind the marker: the hall refuses to start with one line saying what is wrong and how
  to restore (`quhao restore`), or `--reinit` to start over, saying what it discards.

The directory is locked (flock) so two halls never share it, and it must be writable:
a read-only disk is refused at start, not at the first ticket.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

MARKER = "hall.record.json"
DATABASE = "hall.sqlite"
LOCK = "hall.lock"
# Exit status for "the record is wrong, a person must act": systemd's
# RestartPreventExitStatus= keeps the unit from restarting in a tight loop (EX_CONFIG).
EXIT_RECORD = 78
# Up to this size the whole database is checked at start (PRAGMA quick_check: about a
# second for a few months of a busy hall). Beyond it start-up stays fast and checks only
# the pages it reads (the newest snapshot, the events after it); every backup runs a
# full integrity check of the copy, so damage in older pages is found within a backup
# interval.
QUICK_CHECK_MAX_BYTES = 256 << 20


class RecordError(RuntimeError):
    """The state directory cannot be used as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Marker:
    site: str
    database_id: str
    seq: int  # the last event sequence known committed (the database may be ahead)
    at: float

    def describe(self) -> str:
        return f"site {self.site}, database {self.database_id}, {self.seq} events"


def damaged(path: Path, exc: BaseException) -> RecordError:
    """The refusal for a database SQLite cannot read, wherever in start-up it shows."""
    return RecordError(
        f"{path}: damaged database ({exc}); restore the latest backup with `quhao restore`"
    )


def read_marker(state_dir: Path) -> Marker | None:
    path = state_dir / MARKER
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError(f"{path}: cannot read the record marker: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
        return Marker(
            str(data["site"]), str(data["database_id"]), int(data["seq"]), float(data["at"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError(
            f"{path}: the record marker is damaged ({exc}); if the database beside it is "
            f"the right one, delete the marker to adopt it"
        ) from exc


def write_marker(state_dir: Path, marker: Marker) -> None:
    """Atomically: a crash leaves the old marker or the new one, never half of one."""
    path = state_dir / MARKER
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(asdict(marker), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(state_dir)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in this folder durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock(state_dir: Path) -> IO[str]:
    """Hold the state directory for this process; RecordError if another hall holds it."""
    check_writable(state_dir)
    handle = open(state_dir / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise RecordError(
            f"{state_dir}: another hall process holds this state directory ({exc.strerror}); "
            "stop it first"
        ) from exc
    return handle


def check_writable(state_dir: Path) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / f".write-test-{os.getpid()}"
        with open(probe, "w") as handle:
            handle.write("x")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as exc:
        raise RecordError(
            f"{state_dir}: the state directory is not writable ({exc.strerror}); the hall "
            "commits every ticket before answering, so it cannot run on a read-only disk"
        ) from exc
    database = state_dir / DATABASE
    if database.exists() and not os.access(database, os.W_OK):
        raise RecordError(f"{database}: the database file is read-only")


def database_identity(path: Path) -> tuple[str | None, str | None, int]:
    """(database id, site, last event seq) of a database file, read-only.

    RecordError if it is not an SQLite database of a hall at all."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RecordError(f"{path}: cannot open: {exc}") from exc
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables or "events" not in tables:
            raise RecordError(f"{path}: not a hall database (no meta/events tables)")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        return meta.get("database_id"), meta.get("site"), int(seq)
    except sqlite3.DatabaseError as exc:
        raise RecordError(f"{path}: damaged database: {exc}") from exc
    finally:
        db.close()


def check(state_dir: Path, site: str) -> Marker | None:
    """The marker if the database beside it is the record it names; RecordError if not.

    None: there is no marker yet (a new or pre-marker installation)."""
    marker = read_marker(state_dir)
    if marker is None:
        return None
    database = state_dir / DATABASE
    how = (
        f"restore the latest backup with `quhao restore --state-dir {state_dir} --from FILE`, "
        f"or start a new, empty record with `quhao hall --reinit` (today's numbers would "
        f"start again at 001)"
    )
    if marker.site != site:
        raise RecordError(
            f"{state_dir}: this state directory holds the record of site {marker.site!r}, "
            f"not {site!r}; use the right --config or --state-dir"
        )
    if not database.exists():
        raise RecordError(f"{database} is missing, but {marker.describe()} were recorded; {how}")
    if database.stat().st_size == 0:
        raise RecordError(f"{database} is empty, but {marker.describe()} were recorded; {how}")
    database_id, db_site, seq = database_identity(database)
    if database_id != marker.database_id or (db_site is not None and db_site != site):
        raise RecordError(
            f"{database} is another record (database {database_id}, site {db_site}) than the "
            f"one this directory holds ({marker.describe()}); {how}"
        )
    if seq < marker.seq:
        raise RecordError(
            f"{database} ends at event {seq}, but event {marker.seq} was committed: "
            f"{marker.seq - seq} events are missing (an old copy, or damage); {how}"
        )
    if database.stat().st_size <= QUICK_CHECK_MAX_BYTES:
        problem = quick_check(database)
        if problem:
            raise RecordError(f"{database}: damaged database ({problem}); {how}")
    return marker


def quick_check(path: Path) -> str | None:
    """None if SQLite finds every page sound; else its first complaint."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = db.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    first = str(rows[0][0]) if rows else "no answer"
    return None if first == "ok" else first[:200]


def reinit(state_dir: Path) -> str:
    """Move the old record aside (never delete it); returns what was set aside."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", MARKER):
        path = state_dir / name
        if path.exists():
            target = path.with_name(f"{name}.discarded-{stamp}")
            path.rename(target)
            moved.append(target.name)
    return ", ".join(moved) or "nothing"


def new_database_id() -> str:
    return str(uuid.uuid4())


def remove_marker(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / MARKER).unlink()

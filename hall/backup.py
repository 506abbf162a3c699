"""Backups of the hall's record while it serves, and putting one back (`quhao backup`,
`quhao restore`).

A backup is a consistent copy of `hall.sqlite` taken with SQLite's online backup API
inside one read transaction: the hall runs in WAL mode, so this reader never blocks it
and the copy is the database exactly as it was at one committed instant, whatever the
hall commits meanwhile. The copy is written to a temporary file beside the target,
converted to a self-contained file (no -wal), fsynced, verified (`PRAGMA
integrity_check`, the hall's tables, its schema, its database id and site, its last
event) and only then renamed into place; a crash leaves the old backup or the new one,
never half of one.

A restore refuses while a hall holds the state directory (the same lock the hall
takes), verifies the backup the same way, keeps whatever the directory held aside
(`hall.sqlite.replaced-<time>`, with its -wal and -shm), renames a verified copy into
place and writes the record marker for it, so the hall accepts the restored record.
Everything the hall recorded after the backup is lost; the restore says how much at
most, from the marker and whatever is left of the old database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.request import pathname2url

from hall import record
from hall.store import SCHEMA_VERSION

DEFAULT_KEEP = 96  # one day of backups every 15 minutes
COPY_PAGES = 2048  # pages copied per step (8 MiB at SQLite's default page size)
SYNC_EVERY_BYTES = 32 << 20  # flush the copy this often, so no flood of dirty pages builds up
STALE_TEMP_S = 6 * 3600
_TEMP = re.compile(r"^\.quhao-(?:backup|restore)-\d+\.tmp$")


class BackupError(RuntimeError):
    """A backup or restore cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Contents:
    """What a verified hall database holds."""

    path: Path
    database_id: str | None
    site: str | None
    seq: int  # the last event's sequence number (0: no events)
    events: int
    tickets: int
    last_at: float | None  # when the last event happened (hall time)
    size: int
    day: str | None = None  # the last day with tickets
    last_numbers: tuple[tuple[str, str], ...] = ()  # (service, last number issued that day)

    def describe(self) -> str:
        last = f"last seq {self.seq:,}" + (f", {when(self.last_at)}" if self.last_at else "")
        return (
            f"{self.events:,} events ({last}), {self.tickets:,} tickets, "
            f"{megabytes(self.size)}, site {self.site or '(not recorded)'}, "
            f"database {self.database_id or '(no id)'}"
        )


@dataclass
class BackupResult:
    contents: Contents
    copy_s: float
    verify_s: float
    pruned: list[Path] = field(default_factory=list)
    kept: int | None = None
    same_disk: bool = False

    def lines(self) -> list[str]:
        out = [
            f"saved {self.contents.path}: {self.contents.describe()}",
            f"copied in {self.copy_s:.2f} s, verified in {self.verify_s:.2f} s",
        ]
        if self.kept is not None:
            out.append(
                f"{len(self.pruned)} older backups deleted; the newest {self.kept} of this site "
                f"are kept in {self.contents.path.parent}"
            )
        return out


@dataclass
class RestoreResult:
    contents: Contents
    source: Path
    set_aside: list[str]
    previous: str  # what the state directory held before
    lost: int | None  # events recorded after the backup, at most (None: unknown)
    lost_from: int = 0
    marker: bool = True  # a record marker was written for the restored database
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        c = self.contents
        out = [
            f"restored {c.path} from {self.source}: {c.describe()}",
            f"before: {self.previous}",
            "kept aside: " + (", ".join(self.set_aside) if self.set_aside else "nothing"),
        ]
        out += self.notes
        if self.lost is None:
            out.append(
                "LOST: cannot be told. Nothing left in the state directory says how far this "
                "record went (no marker or database of it): everything the hall recorded "
                "after the backup is missing."
            )
        elif self.lost == 0:
            out.append("LOST: nothing; the backup holds every event this directory recorded.")
        else:
            out.append(
                f"LOST: at most {self.lost:,} events (event seq {self.lost_from:,} to "
                f"{self.lost_from + self.lost - 1:,}), recorded after the backup."
            )
        if self.lost != 0:
            since = when(c.last_at) if c.last_at else "the backup was made"
            if c.last_numbers:
                numbers = ", ".join(f"{service} {number}" for service, number in c.last_numbers)
                out.append(f"The backup's last numbers of {c.day}: {numbers}.")
            out += [
                f"Tickets issued after {since} (later numbers) are not in the restored "
                "record: citizens holding them must be served by hand.",
                "Numbering continues from the backup, so those same numbers will be issued "
                "again today. If a newer backup exists, restore the newest one instead.",
            ]
        if not self.marker:
            out.append(
                "The backup has no database id (made before record markers): the hall adopts "
                "it as it is on its next start."
            )
        return out


def when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(at))


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


# ---- verifying --------------------------------------------------------------------


def inspect(path: Path, label: str | None = None) -> Contents:
    """Verify a hall database file and say what it holds; BackupError if it cannot be used.

    Meant for files nobody writes to (a backup, a fresh copy): it reads the file as it is.
    """
    name = label or str(path)
    size = _check_file(path, name)
    try:
        db = sqlite3.connect(_uri(path, "ro"), uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{name}: cannot open: {exc}") from exc
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(10)")]
        if problems != ["ok"]:
            raise BackupError(f"{name}: damaged (integrity check: {'; '.join(problems[:3])})")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"meta", "events", "tickets"} - tables
        if missing:
            raise BackupError(
                f"{name}: not a hall database (no {', '.join(sorted(missing))} table)"
            )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") != str(SCHEMA_VERSION):
            raise BackupError(
                f"{name}: database schema {meta.get('schema')}, this quhao knows "
                f"{SCHEMA_VERSION}; restore it with the quhao version that made it"
            )
        events, seq = db.execute("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM events").fetchone()
        last = db.execute("SELECT at FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        (tickets,) = db.execute("SELECT COUNT(*) FROM tickets").fetchone()
        (day,) = db.execute("SELECT MAX(day) FROM tickets").fetchone()
        numbers = db.execute(
            "SELECT origin_service, number FROM tickets t WHERE day = ? AND issued_at = "
            "(SELECT MAX(issued_at) FROM tickets WHERE day = t.day "
            "AND origin_service = t.origin_service) ORDER BY origin_service",
            (day,),
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{name}: damaged ({exc})") from exc
    finally:
        db.close()
    return Contents(
        path,
        meta.get("database_id"),
        meta.get("site"),
        int(seq),
        int(events),
        int(tickets),
        float(last[0]) if last else None,
        size,
        day,
        tuple((str(service), str(number)) for service, number in numbers),
    )


def _check_file(path: Path, name: str) -> int:
    """The file's size, if it can be an SQLite database at all."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        raise BackupError(f"{name}: no such file") from None
    except OSError as exc:
        raise BackupError(f"{name}: cannot read: {exc.strerror}") from exc
    if size == 0:
        raise BackupError(f"{name}: the file is empty, not a backup")
    if head != b"SQLite format 3\x00":
        raise BackupError(f"{name}: not an SQLite database (damaged, or not a hall backup)")
    return size


# ---- copying ----------------------------------------------------------------------


def snapshot(source: Path, target: Path, *, live: bool) -> None:
    """Copy the database `source` as of one instant into the new file `target`.

    live: the source is a running hall's database (opened read-write, as one more WAL
    reader: SQLite needs that to share the -shm with the hall); otherwise it is opened
    read-only. The copy has no -wal (journal mode DELETE), mode 0600, and is fsynced.
    """
    _check_file(source, str(source))
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        src = sqlite3.connect(_uri(source, "rw" if live else "ro"), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: cannot open: {exc}") from exc
    dst: sqlite3.Connection | None = None
    fd = -1
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        src.execute("PRAGMA busy_timeout=10000")
        src.execute("PRAGMA query_only=1")
        # One read transaction for the whole copy: every page comes from the same
        # committed instant, and a WAL reader never holds the hall's commits up.
        src.execute("BEGIN")
        src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        dst = sqlite3.connect(target, isolation_level=None)
        dst.execute("PRAGMA journal_mode=OFF")  # a fresh private file: no journal needed
        dst.execute("PRAGMA synchronous=OFF")  # synced here, in bounded steps
        flushed = 0

        def progress(status: int, remaining: int, total: int) -> None:
            nonlocal flushed
            written = os.fstat(fd).st_size
            if written - flushed >= SYNC_EVERY_BYTES:
                os.fsync(fd)
                flushed = written

        src.backup(dst, pages=COPY_PAGES, progress=progress)
        src.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=DELETE")  # the copy stands alone, without a -wal
        dst.close()
        dst = None
        os.fsync(fd)
    except sqlite3.Error as exc:
        why = "the copy failed" if live else "cannot be read: damaged, or not a hall backup"
        raise BackupError(f"{source}: {why} ({exc})") from exc
    except OSError as exc:
        raise BackupError(f"{target}: cannot write: {exc.strerror}") from exc
    finally:
        if dst is not None:
            dst.close()
        src.close()
        if fd >= 0:
            os.close(fd)


def backup(
    state_dir: Path, to: Path, keep: int | None = None, now: float | None = None
) -> BackupResult:
    """Back up the hall database of state_dir to the file `to`, or into the directory
    `to` under a timestamped name, pruning that site's backups there beyond `keep`."""
    database = state_dir / record.DATABASE
    if not database.is_file() or database.stat().st_size == 0:
        raise BackupError(f"{database}: no hall database here; is --state-dir the hall's?")
    into_dir = to.is_dir()
    folder = to if into_dir else to.parent
    if not folder.is_dir():
        raise BackupError(f"{folder}: no such directory")
    if keep is not None and keep < 1:
        raise BackupError("--keep must be at least 1")
    try:
        marker = record.read_marker(state_dir)  # read before the copy: the copy is newer
    except record.RecordError as exc:
        raise BackupError(str(exc)) from exc
    _remove_stale_temps(folder)
    temp = folder / f".quhao-backup-{os.getpid()}.tmp"
    try:
        started = time.perf_counter()
        snapshot(database, temp, live=True)
        copied = time.perf_counter()
        contents = inspect(temp, label=f"the copy of {database}")
        verified = time.perf_counter()
        _check_record(database, contents, marker)
        target = _timestamped(folder, contents.site, now) if into_dir else to
        os.replace(temp, target)
        record.fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    result = BackupResult(
        dataclasses.replace(contents, path=target),
        copied - started,
        verified - copied,
        same_disk=folder.stat().st_dev == state_dir.stat().st_dev,
    )
    if into_dir:
        result.kept = keep or DEFAULT_KEEP
        result.pruned = prune(folder, contents.site, result.kept)
    return result


def _check_record(database: Path, contents: Contents, marker: record.Marker | None) -> None:
    """A database the hall would refuse (another record, or behind its marker: an old copy
    put in place) is not backed up: its backups would push the good ones out."""
    if marker is None:
        return
    if contents.database_id != marker.database_id or contents.site != marker.site:
        raise BackupError(
            f"{database} is another record (database {contents.database_id}, site "
            f"{contents.site}) than the one its state directory holds ({marker.describe()}); "
            "not backed up, so that the backups of the right one are kept"
        )
    if contents.seq < marker.seq:
        raise BackupError(
            f"{database} ends at event {contents.seq:,}, but event {marker.seq:,} was "
            "committed (an old copy, or damage); not backed up, so that the backups of the "
            "whole record are kept"
        )


_NAME = "quhao-{site}-{stamp}.sqlite"


def _site_part(site: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", site) if site else "hall"


def _timestamped(folder: Path, site: str | None, now: float | None) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S%z", time.localtime(time.time() if now is None else now))
    target = folder / _NAME.format(site=_site_part(site), stamp=stamp)
    n = 1
    while target.exists():  # two backups within one second
        n += 1
        target = folder / _NAME.format(site=_site_part(site), stamp=f"{stamp}-{n}")
    return target


def backups_in(folder: Path, site: str | None) -> list[Path]:
    """The backups of a site in folder, oldest first (by the time in their names)."""
    pattern = re.compile(
        rf"^quhao-{re.escape(_site_part(site))}-(\d{{8}}T\d{{6}}[+-]\d{{4}})(?:-(\d+))?\.sqlite$"
    )
    found: list[tuple[float, int, Path]] = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            at = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%z").timestamp()
            found.append((at, int(match.group(2) or 1), path))
    return [path for _, _, path in sorted(found)]


def prune(folder: Path, site: str | None, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups of this site in folder; returns them."""
    old = backups_in(folder, site)[:-keep]
    for path in old:
        path.unlink()
    if old:
        record.fsync_dir(folder)
    return old


def _remove_stale_temps(folder: Path) -> None:
    """Temporary files left by a backup or restore that was killed half-way."""
    limit = time.time() - STALE_TEMP_S
    for path in folder.iterdir():
        if _TEMP.match(path.name):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < limit:
                    path.unlink()


# ---- restoring --------------------------------------------------------------------


@dataclass(frozen=True)
class _Current:
    """What the state directory's database is now, examined without changing it."""

    state: str  # missing | empty | damaged | intact
    detail: str = ""
    database_id: str | None = None
    site: str | None = None
    seq: int = 0


def _examine_current(database: Path) -> _Current:
    if not database.exists():
        return _Current("missing")
    if database.stat().st_size == 0:
        return _Current("empty")
    # Without a -wal beside it the file is the whole database: read it as it is, making
    # no -wal or -shm (the hall is not running).
    has_log = database.with_name(database.name + "-wal").exists()
    try:
        db = sqlite3.connect(_uri(database, "ro" if has_log else "ro&immutable=1"), uri=True)
    except sqlite3.Error as exc:
        return _Current("damaged", str(exc))
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            return _Current("damaged", "; ".join(problems))
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
    except sqlite3.Error as exc:
        return _Current("damaged", str(exc))
    finally:
        db.close()
    return _Current("intact", "", meta.get("database_id"), meta.get("site"), int(seq))


def restore(state_dir: Path, source: Path, *, force: bool = False) -> RestoreResult:
    """Put the backup `source` in place as state_dir's hall database (no hall may run)."""
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    try:
        lock = record.lock(state_dir)
    except record.RecordError as exc:
        if "another hall process" in str(exc):
            raise BackupError(
                f"{state_dir}: a hall is running on this state directory (it holds "
                f"{record.LOCK}); stop it first (systemctl stop quhao-hall), then restore. "
                "Nothing was changed."
            ) from exc
        raise BackupError(str(exc)) from exc
    try:
        _adopt_owner(state_dir, [state_dir / record.LOCK])
        return _restore_locked(state_dir, source, force)
    finally:
        lock.close()


def _restore_locked(state_dir: Path, source: Path, force: bool) -> RestoreResult:
    database = state_dir / record.DATABASE
    notes: list[str] = []
    try:
        marker = record.read_marker(state_dir)
    except record.RecordError as exc:
        marker = None
        notes.append(f"note: {exc}")
    current = _examine_current(database)
    _remove_stale_temps(state_dir)
    temp = state_dir / f".quhao-restore-{os.getpid()}.tmp"
    try:
        try:
            snapshot(source, temp, live=False)
            contents = inspect(temp, label=str(source))
        except BackupError as exc:
            raise BackupError(
                f"{exc}. Nothing was changed; restore the next older backup instead."
            ) from exc
        _check_fit(state_dir, contents, marker, current, force)
        lost, lost_from = _lost(contents, marker, current)
        _adopt_owner(state_dir, [temp])
        set_aside = _set_aside(state_dir)
        os.replace(temp, database)
        record.fsync_dir(state_dir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    restored = dataclasses.replace(contents, path=database)
    if restored.database_id is not None and restored.site is not None:
        now_marks = record.Marker(restored.site, restored.database_id, restored.seq, time.time())
        record.write_marker(state_dir, now_marks)
        _adopt_owner(state_dir, [state_dir / record.MARKER])
        wrote_marker = True
    else:  # a backup from before record markers: the hall adopts it as it is
        record.remove_marker(state_dir)
        wrote_marker = False
    return RestoreResult(
        restored,
        source,
        set_aside,
        _previous(marker, current),
        lost,
        lost_from,
        wrote_marker,
        notes,
    )


_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _set_aside(state_dir: Path) -> list[str]:
    """Rename the database and its side files to hall.sqlite.replaced-<time>[-wal…]:
    kept together, SQLite still opens the set aside database with its log."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = f"{record.DATABASE}.replaced-{stamp}"
    n = 1
    while any((state_dir / f"{name}{suffix}").exists() for suffix in _SIDE_FILES):
        n += 1
        name = f"{record.DATABASE}.replaced-{stamp}-{n}"
    moved = []
    for suffix in _SIDE_FILES:
        old = state_dir / f"{record.DATABASE}{suffix}"
        if old.exists():
            old.rename(state_dir / f"{name}{suffix}")
            moved.append(f"{name}{suffix}")
    return moved


def _check_fit(
    state_dir: Path,
    contents: Contents,
    marker: record.Marker | None,
    current: _Current,
    force: bool,
) -> None:
    """Refuse what is most likely a mistake, unless --force."""
    if force:
        return
    sites = {s for s in (marker.site if marker else None, current.site) if s is not None}
    if contents.site is not None and sites and sites != {contents.site}:
        raise BackupError(
            f"the backup is of site {contents.site}, but {state_dir} holds the record of "
            f"site {', '.join(sorted(sites))}; check --from and --state-dir (--force restores "
            "it anyway). Nothing was changed."
        )
    if current.state != "intact":
        return
    if current.database_id != contents.database_id:
        raise BackupError(
            f"{state_dir / record.DATABASE} is intact and is another record (database "
            f"{current.database_id}, {current.seq:,} events) than the backup (database "
            f"{contents.database_id}); --force replaces it (it is kept aside). "
            "Nothing was changed."
        )
    if current.seq > contents.seq:
        raise BackupError(
            f"{state_dir / record.DATABASE} is intact and holds {current.seq - contents.seq:,} "
            f"events more than the backup (up to {current.seq:,}, the backup ends at "
            f"{contents.seq:,}): restoring would lose them. If the hall refuses to start, read "
            "its message first; --force restores anyway (the current database is kept "
            "aside). Nothing was changed."
        )


def _lost(
    contents: Contents, marker: record.Marker | None, current: _Current
) -> tuple[int | None, int]:
    """(events recorded after the backup at most, the first of them); None if unknown."""
    known: list[int] = []
    if marker is not None and marker.database_id == contents.database_id:
        known.append(marker.seq)
    if current.state == "intact" and current.database_id == contents.database_id:
        known.append(current.seq)
    if not known:
        return None, contents.seq + 1
    return max(0, max(known) - contents.seq), contents.seq + 1


def _previous(marker: record.Marker | None, current: _Current) -> str:
    parts = []
    if marker is not None:
        parts.append(f"the record marker names {marker.describe()}")
    else:
        parts.append("no record marker")
    if current.state == "intact":
        parts.append(
            f"the database was intact (database {current.database_id}, last seq {current.seq:,})"
        )
    elif current.state == "damaged":
        parts.append(f"the database was damaged ({current.detail})")
    else:
        parts.append(f"the database was {current.state}")
    return "; ".join(parts)


# ---- files ------------------------------------------------------------------------


def _uri(path: Path, mode: str) -> str:
    return f"file:{pathname2url(str(path.resolve()))}?mode={mode}"


def _adopt_owner(state_dir: Path, paths: list[Path]) -> None:
    """Files a restore makes as root belong to the hall's user, as the directory does
    (under systemd the hall runs as a dynamic user that could not open root's files)."""
    if os.geteuid() != 0:
        return
    owner = state_dir.stat()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(path, owner.st_uid, owner.st_gid)

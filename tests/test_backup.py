"""`quhao backup` and `quhao restore` against the real hall process.

Backups are taken while the hall serves (and it keeps answering), verified, pruned;
a lost or damaged database is restored and the hall starts with every ticket of the
backup; a restore is refused while the hall runs, and a damaged backup is refused.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hall import record
from hall.backup import backups_in, inspect
from hall.engine import Engine
from hall.model import Event
from hall.store import Store
from quhao.broker import Mosquitto
from quhao.config import load
from tests.helpers import ROOT, SITE, SITE_ID, Device, hall_daemon, wait_until

OpenDevice = Callable[[str], Device]


class IssueLoad:
    """One kiosk issuing tickets back to back in a thread: (sent, answered) per request."""

    def __init__(self, kiosk: Device) -> None:
        self.kiosk = kiosk
        self.answered: list[tuple[float, float]] = []  # perf_counter
        self.failures: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._serve)
        self._worker.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            sent = time.perf_counter()
            response = self.kiosk.request("issue", service="enquiry")
            self.answered.append((sent, time.perf_counter()))
            if not response.get("ok"):
                self.failures.append(response)

    def wait_answers(self, count: int, sent_after: float = 0.0) -> None:
        """Until `count` more requests (sent after perf_counter `sent_after`) are answered."""
        start = len(self.answered)
        wait_until(
            lambda: sum(sent > sent_after for sent, _ in self.answered[start:]) >= count,
            what=f"{count} answers",
        )

    def stop(self) -> None:
        self._stop.set()
        self._worker.join(30)


def quhao(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def person(n: int) -> dict[str, object]:
    return {"key": f"{n:064x}", "age": 40}


def grow_history(state_dir: Path, days: int, per_day: int) -> int:
    """Past days of a busy hall, made by the real engine and store; returns the events."""
    config = load(SITE)
    engine = Engine(config, config.read_secret())
    store = Store(state_dir / record.DATABASE, site=config.site.id)
    today = datetime.now(config.site.timezone).date()
    made = 0
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        now = datetime.combine(day, datetime.min.time(), config.site.timezone).timestamp()
        now += 9 * 3600
        events: list[Event] = []
        touched: set[str] = set()
        for _ in range(per_day):
            for device, action, payload in (
                ("kiosk-K1", "issue", {"service": "enquiry"}),
                ("counter-W2", "call", {}),
            ):
                outcome = engine.handle(device, action, payload, now)
                assert outcome.error is None, outcome.error
                events += outcome.events
                touched.update(e.data["ticket"] for e in outcome.events if "ticket" in e.data)
                now += 5.0
        store.commit(events, [engine.tickets[t] for t in touched], [])
        made += len(events)
    store.close()
    return made


def tickets_in(database: Path) -> set[str]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT id FROM tickets")}
    finally:
        db.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in folder.iterdir() if p.name != "hall.log"}


def start_refused(broker: Mosquitto, state: Path) -> subprocess.CompletedProcess[str]:
    return quhao("hall", "--config", SITE, "--broker", broker.url, "--state-dir", state, timeout=60)


@pytest.mark.long
def test_backup_while_the_hall_serves(
    broker: Mosquitto, tmp_path: Path, device: OpenDevice
) -> None:
    state, backups = tmp_path / "hall", tmp_path / "backups"
    backups.mkdir()
    history = grow_history(state, days=30, per_day=1000)  # 90,000 events, ~20 MB
    hall = hall_daemon(broker.url, state).start(timeout=60)
    kiosk, busy = device("kiosk-K1"), device("kiosk-K2")
    today = [
        kiosk.request("issue", service="social", person=person(n))["ticket"]["id"] for n in range(3)
    ]

    issuing = IssueLoad(busy)
    answered, failures = issuing.answered, issuing.failures
    try:
        issuing.wait_answers(20)  # answers before the backups, to compare with
        windows: list[tuple[float, float]] = []
        for _ in range(3):
            issued_before = len(answered)
            started = time.perf_counter()
            result = quhao("backup", "--state-dir", state, "--to", backups)
            windows.append((started, time.perf_counter()))
            assert result.returncode == 0, result.stderr
            assert "saved" in result.stdout and "events" in result.stdout, result.stdout
        issuing.wait_answers(10)  # and some after
    finally:
        issuing.stop()
    assert not failures, failures[:3]

    def overlaps(sent: float, done: float) -> bool:
        return any(sent < end and done > start for start, end in windows)

    during = [done - sent for sent, done in answered if overlaps(sent, done)]
    outside = [done - sent for sent, done in answered if not overlaps(sent, done)]
    backup_s = sum(end - start for start, end in windows) / len(windows)
    print(
        f"\nbackup of {history:,} events: {backup_s:.2f} s per `quhao backup` run; hall "
        f"answers during: n={len(during)} p50={statistics.median(during) * 1000:.1f} ms "
        f"max={max(during) * 1000:.1f} ms; outside: n={len(outside)} "
        f"p50={statistics.median(outside) * 1000:.1f} ms max={max(outside) * 1000:.1f} ms"
    )
    assert len(during) >= 20, "the hall must keep answering while a backup runs"
    assert max(during) < 1.0

    saved = backups_in(backups, SITE_ID)
    assert len(saved) == 3
    newest = inspect(saved[-1])
    assert newest.site == SITE_ID and newest.events >= history + 3
    # every ticket answered before the last backup began is in it
    assert set(today) <= tickets_in(saved[-1])
    assert newest.tickets >= 30 * 1000 + 3 + issued_before
    assert os.stat(saved[-1]).st_mode & 0o077 == 0  # person keys: readable by the owner only
    assert hall.stop() == 0


@pytest.mark.parametrize("loss", ["deleted", "damaged"])
def test_restore_puts_back_every_ticket_of_the_backup(
    broker: Mosquitto, tmp_path: Path, device: OpenDevice, loss: str
) -> None:
    state, backups = tmp_path / "hall", tmp_path / "backups"
    backups.mkdir()
    hall = hall_daemon(broker.url, state).start()
    kiosk, counter = device("kiosk-K1"), device("counter-W1")
    numbers = [
        kiosk.request("issue", service="social", person=person(n))["ticket"]["number"]
        for n in range(3)
    ]
    assert numbers == ["A001", "A002", "A003"]
    assert counter.request("call")["ticket"]["number"] == "A001"
    result = quhao("backup", "--state-dir", state, "--to", backups)
    assert result.returncode == 0, result.stderr
    (backup,) = backups_in(backups, SITE_ID)
    kept = tickets_in(backup)
    assert len(kept) == 3
    # after the backup: this ticket is lost with the database
    assert kiosk.request("issue", service="social", person=person(7))["ticket"]["number"] == "A004"
    assert hall.stop() == 0

    database = state / record.DATABASE
    if loss == "deleted":
        database.unlink()
    else:
        size = database.stat().st_size
        with open(database, "r+b") as handle:
            handle.seek(size // 2)
            handle.write(os.urandom(size - size // 2))
    refused = start_refused(broker, state)  # the hall will not start on what is left
    assert refused.returncode == record.EXIT_RECORD, refused.stderr
    assert "quhao restore" in refused.stderr

    result = quhao("restore", "--state-dir", state, "--from", backup)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "LOST: at most" in out and "served by hand" in out and "again" in out, out
    assert "restore the newest" in out
    assert "last numbers of" in out and ": social A003." in out, out  # A004 was lost
    aside = [p.name for p in state.iterdir() if ".replaced-" in p.name]
    assert bool(aside) == (loss == "damaged"), aside
    marker = record.read_marker(state)
    assert marker is not None and marker.seq == inspect(backup).seq

    hall.start()
    assert tickets_in(database) >= kept
    # the restored queue: A001 is still at window 1, A002 is next
    assert counter.request("call")["ticket"]["number"] == "A002"
    # numbering continues from the backup: the lost A004 is issued again
    assert kiosk.request("issue", service="social", person=person(9))["ticket"]["number"] == "A004"
    assert hall.stop() == 0


def test_restore_refuses_while_the_hall_runs(
    broker: Mosquitto, tmp_path: Path, device: OpenDevice
) -> None:
    state = tmp_path / "hall"
    hall = hall_daemon(broker.url, state).start()
    kiosk = device("kiosk-K1")
    kiosk.request("issue", service="social", person=person(1))
    result = quhao("backup", "--state-dir", state, "--to", tmp_path / "one.sqlite")
    assert result.returncode == 0, result.stderr
    before = sorted(p.name for p in state.iterdir())

    result = quhao("restore", "--state-dir", state, "--from", tmp_path / "one.sqlite")
    assert result.returncode == 1
    assert "a hall is running" in result.stderr and "Nothing was changed" in result.stderr
    assert sorted(p.name for p in state.iterdir()) == before
    assert hall.alive
    assert kiosk.request("issue", service="social", person=person(2))["ticket"]["number"] == "A002"
    assert hall.stop() == 0


def test_a_damaged_backup_is_refused(broker: Mosquitto, tmp_path: Path, device: OpenDevice) -> None:
    state = tmp_path / "hall"
    hall = hall_daemon(broker.url, state).start()
    kiosk = device("kiosk-K1")
    for n in range(3):
        kiosk.request("issue", service="social", person=person(n))
    good = tmp_path / "good.sqlite"
    assert quhao("backup", "--state-dir", state, "--to", good).returncode == 0
    kiosk.request("issue", service="social", person=person(5))  # the database is now ahead
    assert hall.stop() == 0
    data = good.read_bytes()

    page = 4096
    cases = {
        "truncated.sqlite": (data[: len(data) // 2], "damaged"),
        "scribbled.sqlite": (data[: 2 * page] + os.urandom(2 * page) + data[4 * page :], "damaged"),
        "empty.sqlite": (b"", "empty"),
        "notes.txt": ("这不是备份\n".encode(), "not an SQLite database"),
    }
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE things (x)")
    db.commit()
    db.close()
    before = listing(state)
    for name, (content, says) in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        result = quhao("restore", "--state-dir", state, "--from", bad)
        assert result.returncode == 1, (name, result.stdout)
        assert result.stderr.startswith("quhao restore: refused:"), result.stderr
        assert says in result.stderr and result.stderr[-1] == "\n", (name, result.stderr)
        assert listing(state) == before, name
    result = quhao("restore", "--state-dir", state, "--from", other)
    assert result.returncode == 1 and "not a hall database" in result.stderr
    result = quhao("restore", "--state-dir", state, "--from", tmp_path / "missing.sqlite")
    assert result.returncode == 1 and "no such backup file" in result.stderr
    assert listing(state) == before

    # the good backup is older than the intact database: refused unless --force
    result = quhao("restore", "--state-dir", state, "--from", good)
    assert result.returncode == 1 and "1 events more than the backup" in result.stderr
    assert listing(state) == before
    result = quhao("restore", "--state-dir", state, "--from", good, "--force")
    assert result.returncode == 0, result.stderr
    assert "LOST: at most 1 events" in result.stdout, result.stdout
    (aside,) = [p for p in state.iterdir() if p.name.startswith("hall.sqlite.replaced-")]
    assert digest(aside) == before[record.DATABASE]

    result = quhao("backup", "--state-dir", tmp_path / "nowhere", "--to", tmp_path)
    assert result.returncode == 1 and "no hall database here" in result.stderr

    # an old copy put in place of the database is not backed up (the hall refuses it too)
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / record.MARKER).write_bytes((state / record.MARKER).read_bytes())
    (stale / record.DATABASE).write_bytes(data)
    marker = record.read_marker(stale)
    assert marker is not None
    record.write_marker(stale, replace(marker, seq=inspect(good).seq + 1))
    result = quhao("backup", "--state-dir", stale, "--to", tmp_path / "stale.sqlite")
    assert result.returncode == 1 and "an old copy" in result.stderr, result.stderr
    assert not (tmp_path / "stale.sqlite").exists()


def test_keep_prunes_old_backups(broker: Mosquitto, tmp_path: Path, device: OpenDevice) -> None:
    state, backups = tmp_path / "hall", tmp_path / "backups"
    backups.mkdir()
    foreign = backups / "quhao-otherhall-20260101T000000+0800.sqlite"
    notes = backups / "notes.txt"
    foreign.write_bytes(b"another hall's backup")
    notes.write_text("the operator's own file\n")
    hall = hall_daemon(broker.url, state).start()
    kiosk = device("kiosk-K1")
    made: list[str] = []
    for n in range(5):
        kiosk.request("issue", service="enquiry")
        result = quhao("backup", "--state-dir", state, "--to", backups, "--keep", "3")
        assert result.returncode == 0, result.stderr
        made.append(result.stdout.split()[1].rstrip(":"))
        assert f"{1 if n >= 3 else 0} older backups deleted" in result.stdout, result.stdout
    assert hall.stop() == 0
    kept = backups_in(backups, SITE_ID)
    assert [str(p) for p in kept] == made[-3:]
    assert [inspect(p).events for p in kept] == sorted(inspect(p).events for p in kept)
    assert foreign.exists() and notes.exists()
    assert sorted(p.name for p in backups.iterdir()) == sorted(
        [foreign.name, notes.name, *(p.name for p in kept)]
    )


def test_a_long_backup_snapshot_does_not_stall_the_hall(
    broker: Mosquitto, tmp_path: Path, device: OpenDevice
) -> None:
    """A backup of a large database holds one read snapshot for seconds (the copy); the
    hall's periodic work must not wait for it. Held here across a round of the hall's
    housekeeping, as the copy of a few hundred MB is."""
    state = tmp_path / "hall"
    hall = hall_daemon(broker.url, state).start()
    busy = device("kiosk-K2")
    issuing = IssueLoad(busy)
    answered, failures = issuing.answered, issuing.failures
    try:
        issuing.wait_answers(10)
        # the read transaction `quhao backup` holds while it copies (hall.backup.snapshot)
        reader = sqlite3.connect(
            f"file:{state / record.DATABASE}?mode=rw", uri=True, isolation_level=None
        )
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        held, held_wall = time.perf_counter(), time.time()
        # Held until the hall's housekeeping (every 5 s: the record marker, then the WAL
        # checkpoint) has run meanwhile, and requests sent after it are answered.
        wait_until(
            lambda: (marker := record.read_marker(state)) is not None and marker.at > held_wall,
            timeout=15,
            what="the hall's housekeeping while the snapshot is held",
        )
        issuing.wait_answers(20, sent_after=time.perf_counter())
        reader.execute("COMMIT")
        released = time.perf_counter()
        reader.close()
    finally:
        issuing.stop()
    assert not failures, failures[:3]
    during = [done - sent for sent, done in answered if sent < released and done > held]
    assert len(during) >= 20
    assert max(during) < 1.0, f"the hall stalled {max(during):.2f} s during the snapshot"
    assert hall.stop() == 0

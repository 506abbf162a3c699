"""The hall's record under damage: a wrong database at start, a full disk, a read-only one.

- **Damaged records** (the main state directory, hall stopped): the database missing,
  empty, with its header or an events page overwritten, another record's, an older copy;
  a second hall on the same directory. Each time the hall must refuse to start with exit
  status 78 and one `quhao hall: …` line saying what is wrong; `--reinit` starts a new
  record (on a copy); the restored record starts with every ticket.
- **Full disk** (a small tmpfs): once no commit fits, requests are answered `unavailable`
  (never ok without being stored) and `device/hall/status` says `storage_failed` and
  `disk: low`; once space is freed, the same rids are answered ok and nothing is lost.
- **Read-only disk**: at start the hall refuses (78). While it runs, Linux refuses to
  remount a filesystem read-only under a process holding files open for writing, so
  that case cannot arise from a remount; it is attempted and reported as such.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho

from cli.chaos.check import check_records, snapshot
from cli.chaos.clients import Requester, raw_client
from cli.chaos.procs import HallProc
from cli.chaos.site import chaos_site, write_site
from hall.record import DATABASE, EXIT_RECORD, MARKER
from hall.store import Store

if TYPE_CHECKING:
    from cli.chaos.run import ChaosRun

DB_FILES = (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm")


def _count_tickets(db_path: Path) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0])
    finally:
        db.close()


def _clear(state: Path) -> None:
    for name in DB_FILES:
        (state / name).unlink(missing_ok=True)


def _newest_snapshot(db_path: Path) -> int:
    """The event sequence of the newest engine snapshot in the database (0: none)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "snapshots" not in tables:
            return 0
        return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM snapshots").fetchone()[0])
    finally:
        db.close()


def _damage_events_page(db_path: Path, after: int, upto: int | None) -> bool:
    """Overwrite with garbage the page holding an issued event with after < seq <= upto
    (found by its text, after a checkpoint); False if there is none."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT data FROM events WHERE type = 'ticket.issued' AND seq > ? AND seq <= ? "
            "ORDER BY seq",
            (after, upto if upto is not None else 2**62),
        ).fetchall()
    finally:
        db.close()
    data = bytearray(db_path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for (text,) in rows[len(rows) // 2 :]:
        at = data.find(text.encode("utf-8"))
        if at >= 0:
            first = at - at % page
            data[first : first + page] = os.urandom(page)
            db_path.write_bytes(bytes(data))
            return True
    return False


def damaged_records(run: ChaosRun) -> None:
    state, hall = run.state, run.hall
    good = run.work / "record-good"
    good.mkdir(exist_ok=True)
    for name in DB_FILES:
        if (state / name).exists():
            shutil.copy2(state / name, good / name)
    tickets = _count_tickets(good / DATABASE)
    outcomes: list[str] = []

    def refused(name: str, prepare: Callable[[], None], says: str) -> None:
        _clear(state)
        prepare()
        status, line = hall.refusal()
        if status == EXIT_RECORD and says in line:
            outcomes.append(name)
        else:
            run.problem(f"{name} database: exit {status}, said {line!r} (want 78, {says!r})")

    def copy_good() -> None:
        for name in DB_FILES:
            if (good / name).exists():
                shutil.copy2(good / name, state / name)

    def header() -> None:
        copy_good()
        with (state / DATABASE).open("r+b") as handle:
            handle.write(os.urandom(100))

    newest_snapshot = _newest_snapshot(good / DATABASE)

    def events_page(after: int, upto: int | None) -> Callable[[], None]:
        def damage() -> None:
            copy_good()
            _checkpointed(state / DATABASE)
            if not _damage_events_page(state / DATABASE, after, upto):
                raise RuntimeError(f"no events page found between seq {after} and {upto}")

        return damage

    def foreign() -> None:
        Store(state / DATABASE, site="chaos").close()

    def older() -> None:
        shutil.copy2(run.snapshot, state / DATABASE)

    refused("missing", lambda: None, "is missing")
    refused("empty", lambda: (state / DATABASE).touch(), "is empty")
    refused("header-damaged", header, "damaged")
    refused("events-page-damaged", events_page(newest_snapshot, None), "damaged")
    if newest_snapshot:
        # Start-up reads only the events after the newest snapshot; the older ones are
        # still the record, and a damaged record must be refused all the same.
        refused("old-events-page-damaged", events_page(0, newest_snapshot), "damaged")
    refused("foreign", foreign, "is another record")
    refused("older-copy", older, "events are missing")
    _clear(state)
    _reinit_on_copy(run, good, outcomes)
    copy_good()
    if not hall.start():
        run.problem(f"the restored record did not start: {hall.new_output()[-400:]!r}")
        return
    second = HallProc(hall.config, hall.broker_url, state, run.work / "logs" / "second-hall.log")
    status, line = second.refusal()
    if status == EXIT_RECORD and "another hall process holds" in line:
        outcomes.append("second-hall")
    else:
        run.problem(f"a second hall on the same state directory: exit {status}, {line!r}")
    if hall.stop() != 0:
        run.problem("the restored hall did not stop cleanly")
    after = _count_tickets(state / DATABASE)
    if after != tickets:
        run.problem(f"the restored record has {after} tickets, not {tickets}")
    run.figures["damaged_refused"] = outcomes
    cases = 9 if newest_snapshot else 8
    run.figures.setdefault("phases", {})["damaged records"] = (
        f"{len(outcomes)} of {cases} handled ({', '.join(outcomes)}); "
        f"restored record starts with all {tickets:,} tickets"
    )


def _checkpointed(db_path: Path) -> None:
    """Fold the WAL into the database file, so the file alone holds every event."""
    db = sqlite3.connect(db_path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def _reinit_on_copy(run: ChaosRun, good: Path, outcomes: list[str]) -> None:
    """`--reinit` on a copy with a damaged database: a new record starts at 001."""
    scratch = run.work / "reinit"
    scratch.mkdir(exist_ok=True)
    shutil.copy2(good / DATABASE, scratch / DATABASE)
    shutil.copy2(run.state / MARKER, scratch / MARKER)
    with (scratch / DATABASE).open("r+b") as handle:
        handle.write(os.urandom(100))
    hall = HallProc(run.hall.config, run.hall.broker_url, scratch, run.work / "logs" / "reinit.log")
    status, _ = hall.refusal()
    if status != EXIT_RECORD:
        run.problem(f"a damaged copy was not refused (exit {status})")
    if not hall.start("--reinit"):
        run.problem(f"--reinit did not start: {hall.new_output()[-400:]!r}")
        return
    kiosk = Requester(run.broker.port, "chaos", "kiosk-S", None, give_up_s=30)
    try:
        asked = kiosk.ask("issue", {"service": "enquiry", "person": None}, "reinit-1")
    finally:
        kiosk.close()
    hall.stop()
    set_aside = list(scratch.glob(f"{DATABASE}.discarded-*"))
    number = (asked.final or {}).get("ticket", {}).get("number")
    if number == "K00001" and set_aside:
        outcomes.append("reinit")
    else:
        run.problem(f"--reinit: first number {number}, old record set aside: {bool(set_aside)}")


# ---- full and read-only disk ------------------------------------------------------


class StatusWatcher:
    """Every `device/hall/status` payload the hall publishes (retained)."""

    def __init__(self, port: int, site: str) -> None:
        self.topic = f"quhao/{site}/device/hall/status"
        self.payloads: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client: paho.Client = raw_client(port, "display", "status")
        self.client.on_connect = lambda c, *args: c.subscribe(self.topic, qos=1)
        self.client.on_message = self._keep
        self.client.loop_start()

    def _keep(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            self.payloads.append(payload)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(predicate(p) for p in self.payloads):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def _fill(folder: Path) -> Path:
    """A file that takes every free byte of the filesystem (unbuffered: nothing is left
    to flush when the disk is full)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1 << 9):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def disk_phase(run: ChaosRun) -> None:
    phases = run.figures.setdefault("phases", {})
    if os.geteuid() != 0 or shutil.which("mount") is None:
        run.result.skipped.append("full and read-only disk: needs root to mount a tmpfs")
        return
    disk = run.work / "disk"
    disk.mkdir(exist_ok=True)
    mounted = _mount("-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(disk))
    if mounted.returncode != 0:
        run.result.skipped.append(f"full and read-only disk: mount refused ({mounted.stderr})")
        return
    site_id = "chaos-disk"
    config = write_site(run.work / "site-disk.toml", chaos_site(site_id, 1, 1, 1), disk_low_mb=4)
    state = disk / "hall"
    hall = HallProc(config, run.broker.url, state, run.work / "logs" / "disk-hall.log")
    records = run.work / "records" / "disk"
    status = StatusWatcher(run.broker.port, site_id)
    kiosk: Requester | None = None
    try:
        if not hall.start():
            run.problem(f"the hall did not start on the tmpfs: {hall.new_output()[-400:]!r}")
            return
        kiosk = Requester(run.broker.port, site_id, "kiosk-S", records / "kiosk-S.jsonl")
        _full_disk(run, hall, kiosk, status, disk)
        _read_only(run, hall, kiosk, disk)
    finally:
        if kiosk is not None:
            kiosk.close()
        status.close()
        hall.kill()
        _mount("-o", "remount,rw", str(disk))
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    findings = check_records(records, run.work / "disk-copy.sqlite")
    run.report_findings("disk", findings)
    phases["full disk"] = run.figures.pop("_full_disk", "not reached")
    phases["read-only disk"] = run.figures.pop("_read_only", "not reached")


def _issue(kiosk: Requester, rid: str, *, retry: bool = True) -> str:
    return kiosk.ask("issue", {"service": "enquiry", "person": None}, rid, retry=retry).code


def _full_disk(
    run: ChaosRun, hall: HallProc, kiosk: Requester, status: StatusWatcher, disk: Path
) -> None:
    for n in range(20):
        if _issue(kiosk, f"d.before.{n}") != "ok":
            run.problem("the hall on the tmpfs did not issue before the disk filled")
            return
    filler = _fill(disk)
    refused: list[str] = []
    stored_while_full = 0
    for n in range(2000):
        rid = f"d.full.{n}"
        code = _issue(kiosk, rid, retry=False)
        if code == "unavailable":
            refused.append(rid)
            if len(refused) >= 5:
                break
        elif code == "ok":
            stored_while_full += 1  # allowed only if it is in the database at the end
        else:
            run.problem(f"full disk: {rid} answered {code}")
    failed = status.wait_for(lambda p: p.get("state") == "storage_failed", 5)
    low = status.wait_for(lambda p: p.get("disk") == "low", 8)
    filler.unlink()
    retried = [_issue(kiosk, rid) for rid in refused]
    recovered = status.wait_for(lambda p: p.get("state") == "ok" and p.get("at", 0) > 0, 5)
    if not refused:
        run.problem("full disk: no request was answered unavailable")
    if any(code != "ok" for code in retried):
        run.problem(f"full disk: the same rids after freeing space answered {retried}")
    if not failed:
        run.problem("full disk: device/hall/status never said storage_failed")
    if not low:
        run.problem("full disk: device/hall/status never said disk: low")
    if not hall.alive:
        run.problem("full disk: the hall died")
    run.figures["_full_disk"] = (
        f"{len(refused)} answered unavailable ({stored_while_full} ok while filling, each "
        f"stored), status storage_failed {'seen' if failed else 'MISSING'}, disk low "
        f"{'seen' if low else 'MISSING'}; after freeing, the same rids ok: "
        f"{sum(c == 'ok' for c in retried)}/{len(retried)}"
        f"{', state ok again' if recovered else ''}"
    )


def _read_only(run: ChaosRun, hall: HallProc, kiosk: Requester, disk: Path) -> None:
    remount = _mount("-o", "remount,ro", str(disk))
    if remount.returncode == 0:
        # Linux let it happen under the running hall: requests must not be answered ok.
        codes = [_issue(kiosk, f"d.ro.{n}", retry=False) for n in range(5)]
        _mount("-o", "remount,rw", str(disk))
        after = [_issue(kiosk, f"d.ro.{n}") for n in range(5)]
        running = f"while running: {codes}, after rw again {after}"
        if any(c not in ("unavailable", "ok") for c in codes) or any(c != "ok" for c in after):
            run.problem(f"read-only while running: {running}")
    else:
        running = "while running: Linux refuses the remount (the hall holds files open)"
    if hall.stop() != 0:
        run.problem("the hall on the tmpfs did not stop cleanly")
    at_start = "not tested"
    if _mount("-o", "remount,ro", str(disk)).returncode == 0:
        status, line = hall.refusal()
        _mount("-o", "remount,rw", str(disk))
        at_start = f"at start: exit {status}"
        if status != EXIT_RECORD or "not writable" not in line:
            run.problem(f"read-only at start: exit {status}, said {line!r}")
    if not hall.start():
        run.problem("the hall did not start again on the writable tmpfs")
        return
    after = [_issue(kiosk, f"d.after.{n}") for n in range(5)]
    if any(code != "ok" for code in after):
        run.problem(f"after the read-only disk: {after}")
    hall.stop()
    snapshot(hall.state_dir / DATABASE, run.work / "disk-copy.sqlite")
    run.figures["_read_only"] = f"{at_start} (refused); {running}"

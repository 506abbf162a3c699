"""No input, storage fault or clock edge crashes the hall, silently loses its record, or
strands a citizen. Real hall processes, a real broker, real file systems (tmpfs)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hall.engine import Engine
from hall.model import Status
from quhao.broker import Mosquitto
from quhao.config import loads
from quhao.mqtt import Bus
from quhao.topics import Topics
from tests.helpers import SITE, SITE_ID, Device, Recorder, hall_daemon, wait_until

T = Topics(SITE_ID)
TZ = ZoneInfo("Asia/Shanghai")
EXIT_RECORD = 78


def person(n: int) -> dict[str, Any]:
    return {"key": f"{n:064x}", "age": 40}


def _run_hall(broker: Mosquitto, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    daemon = hall_daemon(broker.url, state)
    return subprocess.run(
        [os.sys.executable, "-m", "cli", *daemon.args, *extra],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parent.parent,
    )


# ---- one bad request never hurts another ------------------------------------


def test_unencodable_and_huge_values_get_bad_request_and_the_batch_goes_on(
    broker: Mosquitto, hall, device
) -> None:
    kiosk = device("kiosk-K1")
    recorder = Recorder(broker.url, T.reply("kiosk-K1"))
    raw = Bus(broker.url, "raw-kiosk-K1")
    raw.start()
    poison = [
        b'{"rid":"\\ud800","service":"social"}',
        b'{"rid":' + b"7" * 5000 + b',"service":"social"}',
        b'{"rid":"nan","service":"social","person":{"key":"' + b"a" * 64 + b'","age":NaN}}',
        b'{"rid":"deep","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ]
    for n, payload in enumerate(poison):
        raw.publish(T.request("kiosk-K1", "issue"), payload, correlation=f"p{n}".encode())
    answer = kiosk.request("issue", service="social", person=person(1))  # in the same batch
    assert answer["ok"], answer
    codes = wait_until(
        lambda: (
            len(recorder.payloads(T.reply("kiosk-K1"))) >= 5
            and [r["error"]["code"] for r in recorder.payloads(T.reply("kiosk-K1")) if not r["ok"]]
        ),
        what="answers to every poison request",
    )
    assert codes == ["bad_request"] * 4
    raw.stop()
    recorder.close()
    assert hall.alive and "Traceback" not in hall.log()
    # and again after a restart: nothing poisonous was stored to kill the next start
    hall.stop()
    hall.start()
    assert kiosk.request("issue", service="social", person=person(2))["ok"]


# ---- the record is never silently replaced ----------------------------------


def _issue_some(broker: Mosquitto, state: Path, count: int = 3) -> None:
    hall = hall_daemon(broker.url, state).start()
    kiosk = Device(broker.url, "kiosk-K1")
    for n in range(count):
        assert kiosk.request("issue", service="social", person=person(100 + n))["ok"]
    kiosk.close()
    assert hall.stop() == 0


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "foreign", "older"])
def test_a_lost_or_replaced_database_is_refused_with_a_way_out(
    broker: Mosquitto, tmp_path: Path, damage: str
) -> None:
    state = tmp_path / "hall"
    _issue_some(broker, state)
    db = state / "hall.sqlite"
    if damage == "older":
        shutil.copy(db, tmp_path / "old.sqlite")
    _issue_some(broker, state, 2)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if damage == "deleted":
        db.unlink()
    elif damage == "truncated":
        db.write_bytes(b"")
    elif damage == "garbage":
        db.write_bytes(b"not a database at all " * 1000)
    elif damage == "foreign":
        other = tmp_path / "other"
        _issue_some(broker, other, 1)
        shutil.copy(other / "hall.sqlite", db)
    elif damage == "older":
        shutil.copy(tmp_path / "old.sqlite", db)
    result = _run_hall(broker, state)
    assert result.returncode == EXIT_RECORD, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert ("quhao restore" in message and "--reinit" in message) or damage == "garbage", message
    assert not (state / "hall.sqlite").exists() or damage != "deleted"  # nothing created
    # --reinit starts over and says what it set aside
    started = hall_daemon(broker.url, state)
    started.args.append("--reinit")
    started.start()
    assert "set aside: hall.sqlite" in started.log() or damage == "deleted"
    kiosk = Device(broker.url, "kiosk-K1")
    assert kiosk.request("issue", service="social", person=person(9))["ticket"]["number"] == "A001"
    kiosk.close()
    started.stop()
    assert list(state.glob("hall.sqlite.discarded-*")) or damage == "deleted"


def test_a_database_from_before_markers_is_adopted(broker: Mosquitto, tmp_path: Path) -> None:
    state = tmp_path / "hall"
    _issue_some(broker, state)
    (state / "hall.record.json").unlink()
    hall = hall_daemon(broker.url, state).start()
    kiosk = Device(broker.url, "kiosk-K1")
    assert kiosk.request("issue", service="social", person=person(50))["ticket"]["number"] == "A004"
    kiosk.close()
    hall.stop()
    marker = json.loads((state / "hall.record.json").read_text())
    assert marker["site"] == SITE_ID and marker["seq"] >= 4


def test_two_halls_never_share_a_state_directory(broker: Mosquitto, tmp_path: Path) -> None:
    state = tmp_path / "hall"
    first = hall_daemon(broker.url, state).start()
    second = _run_hall(broker, state)
    assert second.returncode == EXIT_RECORD and "another hall process" in second.stderr
    assert first.alive
    first.stop()


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="quhao-tmpfs-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def test_a_read_only_state_directory_is_refused_at_start(broker: Mosquitto) -> None:
    with _tmpfs("8m") as mount:
        state = mount / "hall"
        _issue_some(broker, state, 1)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        result = _run_hall(broker, state)
        assert result.returncode == EXIT_RECORD, result.stderr
        assert "not writable" in result.stderr


def test_a_full_disk_answers_unavailable_and_recovers_with_the_same_rids(
    broker: Mosquitto, tmp_path: Path
) -> None:
    with _tmpfs("6m") as mount:
        state = mount / "hall"
        site = tmp_path / "site.toml"
        site.write_text(SITE.read_text().replace("[limits]", "[limits]\ndisk_low_mb = 3"))
        (tmp_path / "test.secret").write_text((SITE.parent / "test.secret").read_text())
        hall = hall_daemon(broker.url, state, config=site).start()
        recorder = Recorder(broker.url, T.status("hall"))
        kiosk = Device(broker.url, "kiosk-K1")
        assert kiosk.request("issue", service="social", person=person(1))["ok"]
        filler = mount / "filler"
        with filler.open("wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        rids = [f"full-{n}" for n in range(5)]
        refused = [
            kiosk.request("issue", rid=rid, service="enquiry", person=person(200 + n))
            for n, rid in enumerate(rids)
        ]
        assert all(r["error"]["code"] == "unavailable" for r in refused), refused
        recorder.wait_for(T.status("hall"), lambda p: p.get("disk") == "low", timeout=15)
        assert hall.alive
        filler.unlink()
        again = [
            kiosk.request("issue", rid=rid, service="enquiry", person=person(200 + n))
            for n, rid in enumerate(rids)
        ]
        assert [r["ticket"]["number"] for r in again] == [f"K00{n}" for n in range(1, 6)]
        assert (
            kiosk.request("issue", rid=rids[0], service="enquiry", person=person(200)) == again[0]
        )
        recorder.wait_for(T.status("hall"), lambda p: p.get("disk") == "ok", timeout=15)
        kiosk.close()
        recorder.close()
        hall.stop()
        db = sqlite3.connect(state / "hall.sqlite")
        assert db.execute("SELECT COUNT(*) FROM tickets").fetchone() == (6,)
        wal = state / "hall.sqlite-wal"
        assert not wal.exists() or wal.stat().st_size <= 2 << 20


def test_a_locked_database_answers_the_whole_batch_unavailable_and_the_same_rids_recover(
    broker: Mosquitto, hall, tmp_path: Path
) -> None:
    """Another SQLite connection holds the write lock (a stray `sqlite3` shell, say): the
    hall's commit fails with `database is locked` after its 5 s busy timeout. Every
    request decided in that batch — issues from two kiosks and a counter's call — is
    answered `unavailable` and nothing of it is stored or kept (a malformed request in
    the batch keeps its own answer); the same rids after the lock is gone get one ticket
    each, the call calls the ticket that was first, and asking again changes nothing."""
    kiosk = Device(broker.url, "kiosk-K1")
    assert kiosk.request("issue", service="social", person=person(1))["ticket"]["number"] == (
        "A001"
    )
    status = Recorder(broker.url, T.status("hall"), client_id="locked-status")
    devices = ("kiosk-K1", "kiosk-K2", "counter-W1")
    replies = Recorder(broker.url, *(T.reply(d) for d in devices), client_id="locked-replies")
    batch = [
        ("kiosk-K1", "issue", {"rid": "locked-k1", "service": "social", "person": person(2)}),
        ("kiosk-K2", "issue", {"rid": "locked-k2", "service": "social", "person": person(3)}),
        ("counter-W1", "call", {"rid": "locked-w1"}),
    ]
    raw = Bus(broker.url, "raw-locked")
    raw.start()
    locker = sqlite3.connect(tmp_path / "hall" / "hall.sqlite", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for n, (device, action, payload) in enumerate(batch):  # back to back: one batch
            raw.publish(T.request(device, action), payload, correlation=f"b{n}".encode())
        raw.publish(T.request("kiosk-K1", "issue"), b"{not json", correlation=b"bad")

        def answers() -> dict[str, dict[str, Any]]:
            return {
                p["rid"] or "malformed": p for d in devices for p in replies.payloads(T.reply(d))
            }

        got = wait_until(lambda: len(answers()) == 4 and answers(), 30, "four answers")
        codes = {rid: a["error"]["code"] for rid, a in got.items() if not a["ok"]}
        assert codes == {
            "locked-k1": "unavailable",
            "locked-k2": "unavailable",
            "locked-w1": "unavailable",
            "malformed": "bad_request",
        }, got
        status.wait_for(T.status("hall"), lambda p: p.get("state") == "storage_failed")
        stored = locker.execute("SELECT COUNT(*) FROM requests WHERE rid LIKE 'locked-%'")
        assert stored.fetchone() == (0,)
        assert locker.execute("SELECT COUNT(*) FROM tickets").fetchone() == (1,)
        assert hall.alive
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        raw.stop()

    # the same rids again, one by one: the state was not kept, the numbers were not used
    def ask(device: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        client = Device(broker.url, device)
        try:
            body = {k: v for k, v in payload.items() if k != "rid"}
            return client.request(action, rid=payload["rid"], **body)
        finally:
            client.close()

    again = {payload["rid"]: ask(device, action, payload) for device, action, payload in batch}
    assert again["locked-k1"]["ticket"]["number"] == "A002"
    assert again["locked-k2"]["ticket"]["number"] == "A003"
    assert again["locked-w1"]["ticket"]["number"] == "A001"  # first in the queue, not A002
    for request in batch:
        assert ask(*request) == again[request[2]["rid"]]  # asked again: the stored answer
    status.wait_for(T.status("hall"), lambda p: p.get("state") == "ok")
    db = sqlite3.connect(tmp_path / "hall" / "hall.sqlite")
    assert db.execute("SELECT COUNT(*) FROM tickets").fetchone() == (3,)
    called = db.execute("SELECT COUNT(*) FROM events WHERE type = 'ticket.called'").fetchone()
    assert called == (1,)
    db.close()
    kiosk.close()
    replies.close()
    status.close()


# ---- day rollover -------------------------------------------------------------


def _at(day: int, hour: int, minute: int = 0, second: float = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=TZ).timestamp() + second


def _engine(extra: str = "", hours: str = '["08:30-12:00", "13:30-17:30"]') -> Engine:
    text = SITE.read_text().replace('hours = ["00:00-24:00"]', f"hours = {hours}{extra}")
    return Engine(loads(text, SITE))


def _issue(engine: Engine, now: float, n: int, age: int = 40) -> str:
    outcome = engine.handle(
        "kiosk-K1", "issue", {"service": "social", "person": {"key": f"{n:064x}", "age": age}}, now
    )
    assert outcome.error is None, outcome.error
    return str(outcome.response["ticket"]["id"])


def test_waiting_tickets_expire_at_the_end_of_opening_hours_by_default() -> None:
    engine = _engine()
    late = _issue(engine, _at(23, 17, 29), 1)
    assert engine.tick(_at(23, 17, 29, 59)) == []
    events = engine.tick(_at(23, 17, 30))
    assert [(e.type, e.data["ticket"]) for e in events] == [("ticket.expired", late)]
    assert engine.tickets[late].status == Status.EXPIRED
    assert engine.handle("counter-W1", "call", {}, _at(24, 9)).response["ticket"] is None


def test_expiry_can_wait_while_the_hall_serves_after_closing() -> None:
    engine = _engine("\nexpire_after_minutes = 90")
    ticket = _issue(engine, _at(23, 17, 29), 1)
    assert not [e for e in engine.tick(_at(23, 18, 30)) if e.type == "ticket.expired"]
    called = engine.handle("counter-W1", "call", {}, _at(23, 18, 31)).response["ticket"]
    assert called["id"] == ticket


def test_a_day_closed_while_the_hall_was_down_is_closed_at_the_next_start() -> None:
    engine = _engine()
    ticket = _issue(engine, _at(23, 16), 1)
    events = engine.tick(_at(24, 8))  # the first tick of the next morning
    assert [e.data["ticket"] for e in events if e.type == "ticket.expired"] == [ticket]


def test_a_24_hour_hall_carries_waiting_tickets_over_keeping_their_place() -> None:
    engine = _engine('\nday_end = "carry_over"', hours='["00:00-24:00"]')
    elder = _issue(engine, _at(23, 23, 50), 1, age=80)
    ordinary = _issue(engine, _at(23, 23, 55), 2)
    assert engine.is_open(_at(23, 23, 59, 59.5))  # 24:00 is the end of the day itself
    events = engine.tick(_at(24, 0, 0, 1))
    assert sorted(e.data["ticket"] for e in events if e.type == "ticket.carried") == sorted(
        [elder, ordinary]
    )
    fresh = _issue(engine, _at(24, 0, 1), 3)
    assert fresh.endswith("/A001")  # numbering restarts; the carried keep their numbers
    calls = [
        engine.handle("counter-W1", "call", {}, _at(24, 0, 2 + i)).response["ticket"]["id"]
        for i in range(3)
    ]
    assert calls == [elder, ordinary, fresh]
    assert engine.tickets[elder].issued_at == _at(23, 23, 50)

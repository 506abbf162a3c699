"""Bounded start-up: snapshots of the engine, archived days, the day's report by index.

The record these tests start from is made by `hall.history` through the real engine and
store (simulated days of issuing, calling, skipping, transferring and rating), once per
test session, and copied for each test that changes it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hall import report as report_module
from hall.engine import Engine
from hall.history import History, HistorySpec, cached_history
from hall.model import Status
from hall.report import build
from hall.service import Rebuilt, load_state
from hall.snapshot import FORMAT, KEEP, SnapshotError, decode, encode, restore, save, snapshot
from hall.store import EVENT_DAY, Store
from hall.views import hall_state
from quhao.broker import Mosquitto
from quhao.config import SiteConfig, load, loads
from quhao.topics import Topics
from tests.helpers import SITE, Device, Recorder, hall_daemon, wait_until
from tests.test_engine_properties import state
from tests.test_engine_rules import NINE, SECRET, TZ, call, issue, person, refused

SPEC = HistorySpec(days=6, per_day=300, seed=7, first_day="2026-11-16", snapshot_every=2000)


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return cached_history(tmp_path_factory.mktemp("history") / "record", SPEC)


@pytest.fixture
def record(history: History, tmp_path: Path) -> tuple[Path, SiteConfig]:
    """A copy of the session's record: the hall's state directory, and its site."""
    folder = tmp_path / "hall"
    folder.mkdir()
    for name in ("hall.sqlite", "site.toml", "history.secret"):
        shutil.copy(history.folder / name, folder / name)
    return folder, load(folder / "site.toml")


def _load(folder: Path, config: SiteConfig, snapshots: bool = True) -> Rebuilt:
    store = Store(folder / "hall.sqlite", site=config.site.id)
    try:
        return load_state(config, store, config.read_secret(), snapshots=snapshots)
    finally:
        store.close()


# ---- start-up ----------------------------------------------------------------


def test_snapshot_and_tail_give_the_state_of_a_full_replay(
    record: tuple[Path, SiteConfig], history: History
) -> None:
    folder, config = record
    fast, full = _load(folder, config), _load(folder, config, snapshots=False)
    assert fast.snapshot_seq > 0 and full.snapshot_seq == 0
    assert fast.snapshot_seq + fast.replayed == full.replayed == history.events
    assert fast.replayed < SPEC.snapshot_every + 2 * SPEC.per_day * 8  # a bounded tail
    assert state(fast.engine) == state(full.engine)
    # the live state is today's and yesterday's tickets, not the whole record
    days = {t.day for t in fast.engine.tickets.values()}
    assert len(days) <= 3 and len(fast.engine.tickets) < 3 * SPEC.per_day < history.tickets
    waiting = [t for t in fast.engine.tickets.values() if t.status == Status.WAITING]
    serving = [t for t in fast.engine.terminals.values() if t.current]
    assert waiting and serving  # the record ends mid-morning: there is live state


def test_a_damaged_or_foreign_snapshot_is_skipped_for_an_older_one_or_the_log(
    record: tuple[Path, SiteConfig], caplog: pytest.LogCaptureFixture
) -> None:
    folder, config = record
    expected = state(_load(folder, config, snapshots=False).engine)
    db = sqlite3.connect(folder / "hall.sqlite")
    seqs = [r[0] for r in db.execute("SELECT seq FROM snapshots ORDER BY seq DESC")]
    assert len(seqs) >= 2
    newest, older = seqs[0], seqs[1]
    blob = bytearray(
        db.execute("SELECT state FROM snapshots WHERE seq = ?", (newest,)).fetchone()[0]
    )
    blob[len(blob) // 2] ^= 0xFF
    db.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (bytes(blob), newest))
    db.commit()

    with caplog.at_level(logging.INFO, logger="quhao.hall"):
        rebuilt = _load(folder, config)
    assert f"snapshot at seq {newest} skipped: damaged snapshot" in caplog.text
    assert rebuilt.snapshot_seq == older and state(rebuilt.engine) == expected

    # an older format, and a state whose tickets have other fields: both skipped
    db.execute("UPDATE snapshots SET format = ? WHERE seq = ?", (FORMAT + 1, older))
    for seq in seqs[2:]:
        data = decode(db.execute("SELECT state FROM snapshots WHERE seq = ?", (seq,)).fetchone()[0])
        data["ticket_fields"].pop()  # as if written before Ticket.queue_day existed
        for ticket in data["tickets"]:
            ticket.pop()
        db.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (encode(data), seq))
    db.commit()
    db.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="quhao.hall"):
        rebuilt = _load(folder, config)
    assert f"snapshot at seq {older} skipped: format {FORMAT + 1}" in caplog.text
    assert "state rebuilt from all" in caplog.text or rebuilt.snapshot_seq < older
    assert state(rebuilt.engine) == expected


def test_a_snapshot_the_later_events_do_not_fit_gives_way_to_a_full_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(SITE)
    store = Store(tmp_path / "hall.sqlite")
    engine = Engine(config, SECRET)
    issued = engine.handle("kiosk-K1", "issue", {"service": "tax", "person": person(1)}, NINE)
    store.commit(issued.events, list(engine.tickets.values()), [])
    saved = save(store, engine, NINE)
    called = engine.handle("counter-W2", "call", {}, NINE + 60)
    store.commit(called.events, list(engine.tickets.values()), [])
    data = snapshot(engine)
    data["tickets"], data["queues"] = [], []  # readable, but not the state at its event
    store.db.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (encode(data), saved.seq))
    with caplog.at_level(logging.INFO, logger="quhao.hall"):
        rebuilt = load_state(config, store, SECRET)
    assert f"the events after the snapshot at seq {saved.seq} do not apply to it" in caplog.text
    assert rebuilt.snapshot_seq == 0 and state(rebuilt.engine) == state(engine)
    store.close()


def test_restore_refuses_what_it_does_not_know() -> None:
    config = load(SITE)
    engine = Engine(config, SECRET)
    issue(engine, "social", NINE, 1)
    data = snapshot(engine)
    with pytest.raises(SnapshotError, match="format"):
        restore(config, SECRET, {**data, "format": 0})
    with pytest.raises(SnapshotError, match="site"):
        restore(config, SECRET, {**data, "site": "elsewhere"})
    data["ticket_fields"].append("extra")
    with pytest.raises(SnapshotError, match="ticket fields"):
        restore(config, SECRET, data)
    with pytest.raises(SnapshotError, match="damaged"):
        decode(b"not zlib at all")
    engine.extra_state = {}  # type: ignore[attr-defined]
    with pytest.raises(SnapshotError, match="extra_state"):
        snapshot(engine)


def test_a_snapshot_keeps_the_requests_given_up_and_an_older_one_loads_without() -> None:
    """The hall's memory of requests a kiosk gave up on (handover `abandoned`) is state:
    in the snapshot in its order; a snapshot from before it holds none (none was given)."""
    config = load(SITE)
    engine = Engine(config, SECRET)
    for n, kiosk in enumerate(("kiosk-K1", "kiosk-K2", "kiosk-K1")):
        handover = {"rid": f"h{n}", "abandoned": [f"r{n}", f"s{n}"]}
        assert engine.handle(kiosk, "handover", handover, NINE + n).error is None
    data = decode(encode(snapshot(engine)))
    again = restore(config, SECRET, data)
    assert state(again) == state(engine)
    assert list(again.abandoned["kiosk-K1"]) == ["r0", "s0", "r2", "s2"]
    refused = again.handle("kiosk-K2", "issue", {"rid": "s1", "service": "enquiry"}, NINE + 9)
    assert refused.error is not None and refused.error.code == "superseded"
    older = {k: v for k, v in data.items() if k != "abandoned"}
    assert restore(config, SECRET, older).abandoned == {}


def test_only_the_newest_few_snapshots_are_kept(tmp_path: Path) -> None:
    config = load(SITE)
    store = Store(tmp_path / "hall.sqlite")
    engine = Engine(config, SECRET)
    for n in range(KEEP + 3):
        issued = engine.handle(
            "kiosk-K1", "issue", {"service": "enquiry", "person": None}, NINE + n
        )
        store.commit(issued.events, [engine.tickets[issued.response["ticket"]["id"]]], [])
        save(store, engine, NINE + n)
    assert store.snapshot_seqs() == list(range(4, KEEP + 4))
    newest = store.latest_snapshot()
    assert newest is not None and newest.seq == KEEP + 3
    older = store.latest_snapshot(below=newest.seq)
    assert older is not None and older.seq == KEEP + 2
    assert [e.data["number"] for e in store.events_after(KEEP + 1)] == ["K005", "K006"]
    store.close()


# ---- retention ---------------------------------------------------------------


def test_erasing_person_keys_rewrites_every_snapshot_that_holds_one(tmp_path: Path) -> None:
    config = load(SITE)
    store = Store(tmp_path / "hall.sqlite")
    engine = Engine(config, SECRET)
    old_key, new_key = person(0xA11CE)["key"], person(0xB0B)["key"]
    for n, (key, at) in enumerate([(old_key, NINE), (new_key, NINE + 86400)]):
        outcome = engine.handle(
            "kiosk-K1", "issue", {"service": "social", "person": {"key": key, "age": 30}}, at
        )
        store.commit(outcome.events, [engine.tickets[outcome.response["ticket"]["id"]]], [])
        save(store, engine, at + n)
    assert len(store.snapshot_seqs()) == 2  # the older holds the old key, the newer both

    before = NINE + 3600  # the old key's retention ends
    assert store.erase_person_keys(before) == 1
    engine.forget_person_keys(before)
    assert store.snapshot_seqs() == [1, 2]  # both rewritten without the old key
    texts = [zlib.decompress(r[0]) for r in store.db.execute("SELECT state FROM snapshots")]
    assert not any(old_key.encode() in text for text in texts)
    assert new_key.encode() in texts[1]
    events = [r[0] for r in store.db.execute("SELECT data FROM events")]
    assert not any(old_key in e for e in events)
    # the newer snapshot is now exactly the state of the engine that forgot the key
    newest = store.latest_snapshot()
    assert newest is not None
    assert state(restore(config, SECRET, decode(newest.state))) == state(engine)
    since = [r[0] for r in store.db.execute("SELECT person_keys_since FROM snapshots")]
    assert since == [None, NINE + 86400]

    # a damaged snapshot that would need rewriting is deleted instead
    store.db.execute("UPDATE snapshots SET state = x'00' WHERE seq = 2")
    assert store.erase_person_keys(before + 2 * 86400) == 1  # the new key, found by index
    assert store.snapshot_seqs() == [1]
    store.close()


def test_no_kept_snapshot_of_a_record_holds_an_erased_key(history: History) -> None:
    db = sqlite3.connect(history.database)
    erased_before = float(
        db.execute("SELECT value FROM meta WHERE key = 'keys_erased_before'").fetchone()[0]
    )
    rows = db.execute("SELECT seq, person_keys_since, state FROM snapshots").fetchall()
    assert rows
    for seq, since, blob in rows:
        data = decode(blob)
        issued_at, key = (data["ticket_fields"].index(n) for n in ("issued_at", "person_key"))
        times = [t[issued_at] for t in data["tickets"] if t[key]]
        times += [at for _k, _s, entries in data["person_history"] for at, _ in entries]
        assert since == min(times, default=None), seq
        assert all(at >= erased_before for at in times), f"snapshot {seq} holds an erased key"
    db.close()


# ---- archiving ---------------------------------------------------------------


def test_settled_tickets_of_days_before_yesterday_leave_the_live_state() -> None:
    config = loads(
        SITE.read_text().replace(
            "quota = { tickets = 2, hours = 2 }", "quota = { tickets = 2, hours = 72 }"
        )
        + "\n[privacy]\nperson_key_days = 3\n",
        SITE,
    )
    engine = Engine(config, SECRET)
    day = 86400
    finished = issue(engine, "social", NINE, 1)
    voided = issue(engine, "social", NINE + 1, 1)
    waiting = issue(engine, "tax", NINE + 2, 2)
    assert call(engine, "counter-W1", NINE + 10)["id"] == finished["id"]
    engine.handle("counter-W1", "finish", {}, NINE + 20)
    engine.handle("kiosk-K1", "void", {"ticket": voided["id"]}, NINE + 30)
    # yesterday's settled tickets stay; the waiting one expired
    assert [e.type for e in engine.tick(NINE + day)] == ["ticket.expired"]
    assert finished["id"] in engine.tickets
    events = engine.tick(NINE + 2 * day)
    assert [e.type for e in events] == ["tickets.archived"]
    assert events[0].data == {"before": datetime.fromtimestamp(NINE + day, TZ).date().isoformat()}
    assert not {finished["id"], voided["id"], waiting["id"]} & set(engine.tickets)
    assert not [k for k in engine.last_number if k[0] < events[0].data["before"]]
    assert engine.tick(NINE + 2 * day + 60) == []  # once a day
    # the finished ticket still counts for the 72-hour quota, the voided one does not
    issue(engine, "social", NINE + 2 * day + 100, 1)
    assert (
        refused(
            engine,
            "kiosk-K1",
            "issue",
            {"service": "social", "person": person(1)},
            NINE + 2 * day + 200,
        )
        == "quota_exceeded"
    )
    # an archived ticket is not found any more
    assert (
        refused(
            engine, "counter-W1", "rate", {"ticket": finished["id"], "level": 5}, NINE + 2 * day
        )
        == "unknown_ticket"
    )


def test_a_ticket_still_in_play_is_not_archived() -> None:
    engine = Engine(load(SITE), SECRET)
    issue(engine, "social", NINE, 1)
    serving = call(engine, "counter-W1", NINE + 10)
    assert serving is not None
    engine.tick(NINE + 3 * 86400)
    assert engine.tickets[serving["id"]].status == Status.CALLED
    assert engine.handle("counter-W1", "finish", {}, NINE + 3 * 86400 + 5).error is None


# ---- the day's report --------------------------------------------------------


def test_the_report_reads_one_day_by_index_and_matches_the_whole_log(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = "2026-11-18"
    db = sqlite3.connect(history.database)
    plan = db.execute(
        f"EXPLAIN QUERY PLAN SELECT at FROM events WHERE {EVENT_DAY} >= ? AND {EVENT_DAY} < ?",
        (day, day + "0"),
    ).fetchall()
    assert any("USING INDEX events_day" in row[-1] for row in plan), plan
    db.close()
    by_index = build(history.database, day, TZ)
    assert by_index.total.issued > SPEC.per_day * 0.9

    def whole_log(db: sqlite3.Connection, _day: str) -> list:
        rows = db.execute("SELECT at, type, data FROM events ORDER BY seq")
        return [(at, kind, json.loads(data)) for at, kind, data in rows]

    monkeypatch.setattr(report_module, "day_events", whole_log)
    assert build(history.database, day, TZ) == by_index


# ---- the real hall process -----------------------------------------------------


def test_the_hall_starts_from_a_snapshot_of_a_multi_day_record(
    broker: Mosquitto, record: tuple[Path, SiteConfig], history: History
) -> None:
    folder, config = record
    expected = _load(folder, config, snapshots=False).engine
    now = SPEC.ends_at + 30
    clock = datetime.fromtimestamp(now, TZ).isoformat()
    topics = Topics(config.site.id)
    recorder = Recorder(broker.url, topics.hall_state, client_id="test-history-state")
    hall = hall_daemon(broker.url, folder, config=folder / "site.toml", clock=clock).start()
    try:
        found = re.search(
            r"state rebuilt from snapshot at seq (\d+) \+ (\d+) events in (\d+) ms", hall.log()
        )
        assert found, hall.log()
        seq, replayed = int(found[1]), int(found[2])
        assert seq > 0 and seq + replayed == history.events
        published = recorder.wait_for(topics.hall_state, lambda p: p["day"] == SPEC.last_day)
        wanted = hall_state(expected, now)
        assert published["services"] == wanted["services"]
        assert published["windows"] == wanted["windows"]
        # the numbering and the queues go on where the record left them
        kiosk = Device(broker.url, "kiosk-K1", config.site.id)
        counter = Device(broker.url, "counter-W1", config.site.id)
        issued = kiosk.request("issue", service="enquiry", person=None)
        number = expected.last_number[(SPEC.last_day, "enquiry")] + 1
        assert issued["ticket"]["number"] == f"K{number:04d}"
        expected.handle("kiosk-K1", "issue", {"service": "enquiry", "person": None}, now)
        wanted_call = expected.handle("counter-W1", "call", {}, now).response["ticket"]
        assert counter.request("call")["ticket"]["number"] == wanted_call["number"]
        kiosk.close()
        counter.close()
    finally:
        recorder.close()
        assert hall.stop() == 0


def test_the_hall_takes_a_snapshot_at_the_day_end_and_starts_from_it(
    broker: Mosquitto, record: tuple[Path, SiteConfig]
) -> None:
    folder, _config = record
    last_day = datetime.fromisoformat(SPEC.last_day).replace(tzinfo=TZ)
    before_midnight = last_day.replace(hour=23, minute=59, second=58).isoformat()
    hall = hall_daemon(broker.url, folder, config=folder / "site.toml", clock=before_midnight)
    hall.start()
    try:
        found = wait_until(
            lambda: re.search(r"snapshot at seq (\d+) \(day end\): (\d+) live tickets", hall.log()),
            timeout=20,
            what="the day-end snapshot",
        )
    finally:
        assert hall.stop() == 0
    store = Store(folder / "hall.sqlite")
    last = store.last_seq()
    assert int(found[1]) == last and store.snapshot_seqs()[-1] == last
    archived = [e for e in store.events_after(last - 50) if e.type == "tickets.archived"]
    store.close()
    assert archived  # the night archived the days before yesterday before the snapshot

    next_morning = (last_day.replace(hour=0, minute=1) + timedelta(days=1)).isoformat()
    again = hall_daemon(broker.url, folder, config=folder / "site.toml", clock=next_morning)
    again.start()
    assert again.stop() == 0
    assert f"state rebuilt from snapshot at seq {last} + 0 events" in again.log()

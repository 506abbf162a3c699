"""The city view end to end: two real halls, their Mosquitto brokers bridged (TLS, own
users, persistent sessions, QoS 1) to the city broker, `quhao city` writing into a real
PostgreSQL. Under load the link is cut, the city broker SIGKILLed, `quhao city`
SIGKILLed and a hall restarted; the city ends with every event of every hall exactly
once, in sequence, and the city report equals the halls' own reports. Then the abuse:
a hall publishing as another, malformed feeds, a replay flood."""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import threading
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest

from city.report import build as city_report
from cli.bench.citynet import CityNet
from hall.feed import REPLAY_RATE
from hall.report import build as hall_report
from quhao.citybroker import acl as city_acl
from quhao.config.city import load_city
from quhao.idnumber import with_check
from quhao.mqtt import Bus
from quhao.personkey import person_key
from quhao.wire import encode
from tests.helpers import SITE, Daemon, Device, Recorder, hall_daemon, wait_until

HALLS = ("testhall", "hall2")


def _site_file(folder: Path, site: str) -> Path:
    if site == "testhall":
        return SITE
    text = SITE.read_text().replace('id = "testhall"', f'id = "{site}"')
    text = text.replace('secret_file = "test.secret"', f'secret_file = "{SITE.parent}/test.secret"')
    # a booking not checked in by its slot's start is a no-show once the slot is over
    text += "\n[appointments]\nlate_minutes = 0\n"
    path = folder / f"{site}.toml"
    path.write_text(text)
    return path


class Net:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        files = {site: _site_file(root, site) for site in HALLS}
        self.net = CityNet(root / "net", [[HALLS[0]], [HALLS[1]]], files).start()
        self.files = files
        self.root = root
        self.halls = {
            site: hall_daemon(self.net.hall_url(site), root / site, config=files[site])
            for site in HALLS
        }
        for daemon in self.halls.values():
            daemon.launch()
        for daemon in self.halls.values():
            daemon.wait_ready()
        self.city = self.city_daemon().start()

    def city_daemon(self) -> Daemon:
        return Daemon(
            ["city", "--config", str(self.net.city_toml), "--log-level", "DEBUG"],
            self.root / "city.log",
            "city serving",
        )

    def hall_db(self, site: str) -> Path:
        return self.root / site / "hall.sqlite"

    def hall_seq(self, site: str) -> int:
        db = sqlite3.connect(f"file:{self.hall_db(site)}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
        finally:
            db.close()

    def city_done(self) -> dict[str, int]:
        with psycopg.connect(self.net.dsn) as conn:
            return dict(conn.execute("SELECT hall, done FROM feed_positions").fetchall())

    def wait_caught_up(self, timeout: float = 60.0) -> None:
        def caught_up() -> bool:
            done = self.city_done()
            return all(done.get(site) == self.hall_seq(site) for site in HALLS)

        wait_until(caught_up, timeout, "the city to hold every hall's last event")

    def wait_live(self, timeout: float = 30.0) -> None:
        """Until the city (as last started) takes the live feed, not only pages."""

        def live() -> bool:
            log = self.city.log()
            since = log[log.rfind("city serving") :]
            return since.rfind("taking the live feed") > since.rfind("pulling pages")

        wait_until(live, timeout, "the city to take the live feed")

    def close(self) -> None:
        self.city.stop()
        for daemon in self.halls.values():
            daemon.stop()
        self.net.close()


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    net = Net(tmp_path_factory.mktemp("city"))
    try:
        yield net
    finally:
        net.close()


def _serve(url: str, site: str, stop: threading.Event, seed: int) -> None:
    """A kiosk and a counter of one hall, issuing, calling, finishing and rating."""
    rnd = random.Random(seed)
    kiosk, counter = Device(url, "kiosk-K1", site=site), Device(url, "counter-W2", site=site)
    try:
        while not stop.is_set():
            try:
                kiosk.request("issue", service="enquiry", person=None)
                answer = counter.request("call")
                if not answer.get("ok"):
                    continue
                ticket = answer["ticket"]["id"]
                if rnd.random() < 0.15:
                    counter.request("skip")
                    continue
                counter.request("finish")
                level = rnd.choice([None, 1, 2, 3, 4, 5, 5, 5])
                payload: dict[str, Any] = {"ticket": ticket, "level": level}
                if level is not None and level <= 2:
                    payload["reason"] = "等太久"
                counter.request("rate", **payload)
            except (TimeoutError, AssertionError):
                continue  # a hall restarting: the next round goes on
    finally:
        kiosk.close()
        counter.close()


@pytest.mark.long
def test_cuts_restarts_and_kills_lose_and_double_nothing(city: Net) -> None:
    stop = threading.Event()
    load = [
        threading.Thread(target=_serve, args=(city.net.hall_url(s), s, stop, i), daemon=True)
        for i, s in enumerate(HALLS)
    ]
    for thread in load:
        thread.start()
    try:

        def grew(site: str, by: int) -> Any:
            start = city.hall_seq(site)
            return wait_until(lambda: city.hall_seq(site) >= start + by, 30, f"{site} to work")

        grew("testhall", 20)
        city.net.relays["testhall"].cut()  # the link of one hall, under load
        grew("testhall", 30)
        city.net.relays["testhall"].mend()
        city.net.restart_city_broker(kill=True)  # SIGKILL, then back on its persistence
        grew("hall2", 20)
        city.city.kill()  # the city daemon dies mid-stream
        grew("hall2", 20)
        city.city = city.city_daemon().start()
        city.halls["hall2"].stop()  # a hall restarts
        city.halls["hall2"].start()
        grew("hall2", 20)
        grew("testhall", 20)
    finally:
        stop.set()
        for thread in load:
            thread.join(15)
    city.wait_caught_up()

    with psycopg.connect(city.net.dsn) as conn:
        for site in HALLS:
            rows = conn.execute(
                "SELECT seq, at_s, type FROM events WHERE hall = %s ORDER BY seq", (site,)
            ).fetchall()
            hall_db = sqlite3.connect(f"file:{city.hall_db(site)}?mode=ro", uri=True)
            logged = hall_db.execute("SELECT seq, at, type FROM events ORDER BY seq").fetchall()
            hall_db.close()
            assert [r[0] for r in rows] == list(range(1, len(logged) + 1)), site
            assert [tuple(r) for r in rows] == [tuple(r) for r in logged], site
            assert conn.execute(
                "SELECT count(*) FROM events WHERE hall = %s AND data::text LIKE '%%person_key%%'",
                (site,),
            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM cases").fetchone()[0] > 0

    # The city's report of each day equals each hall's own report of that day.
    for site in HALLS:
        days = {
            r[0]
            for r in sqlite3.connect(f"file:{city.hall_db(site)}?mode=ro", uri=True).execute(
                "SELECT DISTINCT day FROM tickets"
            )
        }
        for day in sorted(days):
            theirs = hall_report(city.hall_db(site), day).services
            date = dt.date.fromisoformat(day)
            ours = {
                r.key: r
                for r in city_report(city.net.dsn, date, date).groups["services"]
                if r.hall == site
            }
            assert set(ours) == set(theirs), (site, day)
            for service, group in theirs.items():
                row = group.row()
                mine = ours[service].csv_row()
                for column in (
                    "issued", "served", "no_shows", "voided", "wait_p50_min", "wait_p90_min",
                    "wait_max_min", "satisfaction", "level_5", "level_4", "level_3", "level_2",
                    "level_1", "unrated", "quota_refusals",
                ):  # fmt: skip
                    assert mine[column] == row[column], (site, day, service, column)


def _bridge_client(city: Net, site: str) -> paho.Client:
    """A client logged in to the city broker as hall `site`'s bridge user, over TLS."""
    folder = city.net.root / "citybroker"
    password = (folder / "credentials" / f"hall-{site}" / "password").read_text().strip()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"hall-{site}", protocol=paho.MQTTv5
    )
    client.username_pw_set(f"hall-{site}", password)
    client.tls_set(ca_certs=str(folder / "ca" / "ca.crt"))
    client.connect("127.0.0.1", city.net.city_tls_port)
    client.loop_start()
    return client


def _publish(client: paho.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_a_hall_cannot_publish_as_another_and_malformed_feeds_are_dropped(city: Net) -> None:
    # The ACL the generator writes: each bridge user under its own hall only.
    config, _ = load_city(city.net.city_toml)
    text = city_acl(config)
    assert "user hall-testhall\ntopic write city/halls/testhall/feed\n" in text
    assert "topic write city/halls/hall2" not in text.split("user hall-hall2")[0]
    city.wait_caught_up()
    city.wait_live()  # what is forged below goes to the live feed's topic
    before = city.city_done()
    forged = {
        "site": "hall2",
        "db": "forged",
        "head": before["hall2"] + 1,
        "events": [
            {"seq": before["hall2"] + 1, "at": time.time(), "type": "ticket.issued",
             "data": {"ticket": "2026-01-01/Z001", "number": "Z001", "service": "x"}}
        ],
    }  # fmt: skip
    client = _bridge_client(city, "testhall")
    try:
        # under another hall's topic: the city broker drops it (ACL)
        _publish(client, "city/halls/hall2/feed", encode(forged))
        # under its own topic, naming another hall: the city drops it (identity)
        _publish(client, "city/halls/testhall/feed", encode(forged))
        garbage = [
            b"not json",
            b"\xff\xfe",
            b"[]",
            b"{}",
            encode({"site": "testhall", "db": "x", "head": -1, "events": []}),
            encode({**forged, "site": "testhall", "events": [{"seq": "1"}]}),
            encode({**forged, "site": "testhall", "head": 0}),  # seq beyond head
            encode({**forged, "site": "testhall", "events": [{**forged["events"][0], "at": 1e15}]}),
            b"{" * 5000,
            b'{"site":"testhall","pad":"' + b"x" * 400_000 + b'"}',
        ]
        for raw in garbage:
            _publish(client, "city/halls/testhall/feed", raw)
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(lambda: "dropped (identity)" in city.city.log(), 10, "the identity drop")
    wait_until(lambda: "dropped (malformed)" in city.city.log(), 10, "the malformed drop")
    assert city.city.alive
    with psycopg.connect(city.net.dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM events WHERE data->>'number' = 'Z001'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM feed_positions WHERE stopped IS NOT NULL"
        ).fetchone() == (0,)
    # and the feed goes on
    kiosk = Device(city.net.hall_url("hall2"), "kiosk-K2", site="hall2")
    try:
        assert kiosk.request("issue", service="enquiry", person=None)["ok"]
    finally:
        kiosk.close()
    city.wait_caught_up()


def test_a_replay_flood_is_bounded_and_the_hall_keeps_answering(city: Net) -> None:
    # As the bridge delivers them in the hall's broker (the city's requests come that way).
    bus = Bus(city.net.hall_url("testhall"), "flooder")
    bus.start()
    kiosk = Device(city.net.hall_url("testhall"), "kiosk-K2")
    feed = Recorder(
        city.net.hall_url("testhall"), "quhao/testhall/feed/replay", client_id="feedwatch"
    )
    started_flood = time.monotonic()
    try:
        for n in range(3000):
            bus.publish("quhao/testhall/feed/req", encode({"after": 0, "limit": 500}))
            if n % 1000 == 999:  # answered meanwhile (behind the flood in the broker's queue)
                started = time.monotonic()
                assert kiosk.request("issue", service="enquiry", person=None)["ok"]
                assert time.monotonic() - started < 5.0
        for raw in (b"x", encode({"after": -1}), encode({"after": 0, "limit": 10**9})):
            bus.publish("quhao/testhall/feed/req", raw)
        wait_until(
            lambda: "malformed replay request" in city.halls["testhall"].log(), 10, "a refusal"
        )
        flood_s = time.monotonic() - started_flood
        started = time.monotonic()  # and once the flood is read, as quick as ever
        assert kiosk.request("issue", service="enquiry", person=None)["ok"]
        assert time.monotonic() - started < 1.0
        time.sleep(0.5)  # pages already sent reach the recorder (it only counts)
    finally:
        kiosk.close()
        bus.stop()
        feed.close()
    pages = [m for m in feed.messages if json.loads(m.payload).get("replay")]
    # 3,000 requests (all the same: waiting once): at most a page a round and REPLAY_RATE
    assert 0 < len(pages) <= REPLAY_RATE.burst + REPLAY_RATE.per_s * (flood_s + 0.5) + 2
    assert city.halls["testhall"].alive and city.city.alive
    city.wait_caught_up()
    log = city.halls["testhall"].log()
    assert "Traceback" not in log and "Traceback" not in city.city.log()


def test_a_bad_rating_and_its_follow_up_reach_the_citys_cases_with_the_halls_deadline(
    city: Net,
) -> None:
    url = city.net.hall_url("hall2")
    kiosk, counter = Device(url, "kiosk-K1", site="hall2"), Device(url, "counter-W2", site="hall2")
    office = Device(url, "office", site="hall2")
    try:
        assert kiosk.request("issue", service="enquiry", person=None)["ok"]
        called = counter.request("call")
        assert called["ok"], called
        ticket = called["ticket"]["id"]
        assert counter.request("finish")["ok"]
        assert counter.request("rate", ticket=ticket, level=1, reason="态度差")["ok"]
        day, _, number = ticket.partition("/")
        case = f"C{day.replace('-', '')}-{number}"
        proof = {"staff": "S002", "pin": "2222"}
        for state, note in (("contacted", "电话回访，已致歉"), ("resolved", "整改完成")):
            answer = office.request("case_update", case=case, state=state, note=note, by=proof)
            assert answer["ok"], answer
    finally:
        for device in (kiosk, counter, office):
            device.close()
    city.wait_caught_up()
    hall_db = sqlite3.connect(f"file:{city.hall_db('hall2')}?mode=ro", uri=True)
    try:
        (opened,) = hall_db.execute(
            "SELECT data FROM events WHERE type = 'case.opened' AND data LIKE ?", (f"%{case}%",)
        ).fetchone()
    finally:
        hall_db.close()
    with psycopg.connect(city.net.dsn) as conn:
        row = conn.execute(
            "SELECT ticket, extract(epoch FROM due), state, closed IS NOT NULL AND closed <= due, "
            "note, by_staff, level, reason, from_hall FROM cases WHERE hall = 'hall2' AND id = %s",
            (case,),
        ).fetchone()
        # the hall's own deadline (working days, holidays), not a flat guess
        assert row is not None and row[0] == ticket
        assert row[1] == pytest.approx(json.loads(opened)["due"], abs=1e-3)
        assert row[2:] == ("resolved", True, "整改完成", "S002", 1, "态度差", True)
    # and the city's report counts it closed on time, in the hall's row of that day
    date = dt.date.fromisoformat(day)
    (mine,) = [
        r for r in city_report(city.net.dsn, date, date).groups["halls"] if r.hall == "hall2"
    ]
    assert mine.closed_on_time >= 1


def test_appointments_reach_the_city_by_day_without_the_person_or_the_booking(
    city: Net,
) -> None:
    """Bookings imported by the office, one checked in at a kiosk, one left to pass: the
    city's `appointments` and its report count per hall, day and service what the hall's
    own log holds, and no person key or booking reference reaches the city."""
    tz = zoneinfo.ZoneInfo("Asia/Shanghai")

    def local_day(at: float) -> dt.date:
        return dt.datetime.fromtimestamp(at, tz).date()

    if local_day(time.time() - 60) != local_day(time.time() + 45):
        time.sleep(110)  # a slot may not run past midnight: book after it
    now = time.time()
    secret = (SITE.parent / "test.secret").read_bytes().strip()
    keys = [person_key(secret, with_check(f"44010619900101{n}23")) for n in range(3)]
    refs = ["WSYY-CITY-1", "WSYY-CITY-2", "WSYY-CITY-3"]
    bookings = [
        {"ref": refs[0], "person_key": keys[0], "service": "enquiry", "start": now + 20,
         "end": now + 40},  # checks in (the window opens 30 minutes before the start)
        {"ref": refs[1], "person_key": keys[1], "service": "enquiry", "start": now - 60,
         "end": now + 2},  # never comes: a no-show in two seconds
        {"ref": refs[2], "person_key": keys[2], "service": "social", "start": now + 30,
         "end": now + 40},  # booked, not (yet) here
    ]  # fmt: skip
    url = city.net.hall_url("hall2")
    office, kiosk = Device(url, "office", site="hall2"), Device(url, "kiosk-K1", site="hall2")
    try:
        imported = office.request("appointment_import", bookings=bookings)
        assert imported["ok"] and sorted(imported["booked"]) == refs, imported
        checked = kiosk.request("checkin", person={"key": keys[0], "age": 36})
        assert checked["ok"], checked
    finally:
        office.close()
        kiosk.close()

    def hall_counts() -> dict[tuple[str, str, str], int]:
        hall_db = sqlite3.connect(f"file:{city.hall_db('hall2')}?mode=ro", uri=True)
        try:
            rows = hall_db.execute(
                "SELECT type, json_extract(data, '$.day'), json_extract(data, '$.service'), "
                "count(*) FROM events WHERE type LIKE 'appointment.%' GROUP BY 1, 2, 3"
            ).fetchall()
        finally:
            hall_db.close()
        return {(t.removeprefix("appointment."), d, s): n for t, d, s, n in rows}

    wait_until(lambda: ("no_show", local_day(now).isoformat(), "enquiry") in hall_counts(),
               15, "the hall to mark the no-show")  # fmt: skip
    city.wait_caught_up()
    theirs = hall_counts()
    with psycopg.connect(city.net.dsn) as conn:
        ours = {
            (kind, day.isoformat(), service): n
            for kind, day, service, n in conn.execute(
                "SELECT kind, day, service, count(*) FROM appointments WHERE hall = 'hall2' "
                "GROUP BY 1, 2, 3"
            )
        }
        assert ours == theirs
        # neither the person nor the online hall's booking reference left the hall
        for column in ("data::text", "coalesce(ticket, '')"):
            found = conn.execute(
                f"SELECT count(*) FROM events WHERE {column} LIKE '%%WSYY-CITY%%' "
                f"OR {column} LIKE %s",
                (f"%{keys[1][:16]}%",),
            ).fetchone()
            assert found == (0,), column
    day = local_day(now)
    booked = {(r.day, r.service): r for r in city_report(city.net.dsn, day, day).appointments
              if r.hall == "hall2"}  # fmt: skip
    enquiry, social = booked[(day, "enquiry")], booked[(day, "social")]
    assert (enquiry.booked, enquiry.checked_in, enquiry.no_shows) == (2, 1, 1)
    assert (social.booked, social.checked_in) == (1, 0)
    assert social.no_shows == theirs.get(("no_show", day.isoformat(), "social"), 0)


def test_migration_3_projects_the_appointment_events_the_city_already_holds(city: Net) -> None:
    """A city database at schema 2 holds appointment events (the feed let them out before
    the table existed): `quhao city migrate` projects them, and skips what is not one."""
    from city.schema import MIGRATIONS, applied, ensure_partitions, migrate

    dsn = city.net.pg.create_database("city_at_2")
    today = dt.date.today()
    with psycopg.connect(dsn) as conn:
        applied(conn)
        for version, what, sql in MIGRATIONS[:2]:
            conn.execute(sql.encode())
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, what))
        ensure_partitions(conn, today, 1)
        at = time.time()
        slot = {"service": "enquiry", "start": at + 60, "end": at + 120}
        for seq, kind, data in (
            (1, "appointment.booked", {"day": today.isoformat(), **slot}),
            (2, "appointment.checked_in", {"day": today.isoformat(), **slot, "ticket": "t"}),
            (3, "appointment.no_show", {"day": "2026-02-30", **slot}),  # not a day
            (4, "appointment.booked", {"day": today.isoformat(), "service": "x", "start": "?"}),
            (5, "ticket.issued", {"day": today.isoformat(), "service": "enquiry"}),
        ):
            conn.execute(
                "INSERT INTO events (hall, seq, at, at_s, type, data) "
                "VALUES ('h', %s, to_timestamp(%s), %s, %s, %s::jsonb)",
                (seq, at, at, kind, json.dumps(data)),
            )
    assert any("migration 3" in line for line in migrate(dsn, today, 1))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT seq, kind, day, service, slot_start IS NOT NULL, ticket FROM appointments "
            "ORDER BY seq"
        ).fetchall()
    assert rows == [
        (1, "booked", today, "enquiry", True, None),
        (2, "checked_in", today, "enquiry", True, "t"),
        (4, "booked", today, "x", False, None),
    ]


def test_a_ticket_id_issued_again_keeps_the_first_row_and_the_batch_goes_in(city: Net) -> None:
    """A batch's new tickets go straight into `tickets` (COPY in a savepoint): a hall that
    issues an id again must not have its batch refused — the first row stays, as before,
    and every event and the position are written."""
    from city.ingest import Batch, CityEvent
    from city.schema import migrate
    from city.writer import HallInfo, Writer

    dsn = city.net.pg.create_database("city_reissued")
    migrate(dsn, dt.date.today(), 1)
    writer = Writer(dsn)
    try:
        writer.register([HallInfo("h")])
        at, ticket = time.time(), f"{dt.date.today().isoformat()}/A001"

        def issued(seq: int, ticket: str, service: str) -> CityEvent:
            data = {"ticket": ticket, "number": ticket[-4:], "service": service}
            return CityEvent("h", seq, at + seq, "ticket.issued", data)

        writer.write(Batch([issued(1, ticket, "first")], {"h": (0, 1)}, {"h": "db"}))
        again = [issued(2, ticket, "second"), issued(3, ticket[:-1] + "2", "other")]
        writer.write(Batch(again, {"h": (1, 3)}, {"h": "db"}))
        assert writer.reissued == 1
        conn = writer.conn
        assert conn.execute("SELECT id, origin_service FROM tickets ORDER BY id").fetchall() == [
            (ticket, "first"),
            (ticket[:-1] + "2", "other"),
        ]
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (3,)
        assert writer.positions()["h"][0] == 3
    finally:
        writer.close()

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
from quhao.mqtt import Bus
from quhao.wire import encode
from tests.helpers import SITE, Daemon, Device, Recorder, hall_daemon, wait_until

HALLS = ("testhall", "hall2")


def _site_file(folder: Path, site: str) -> Path:
    if site == "testhall":
        return SITE
    text = SITE.read_text().replace('id = "testhall"', f'id = "{site}"')
    text = text.replace('secret_file = "test.secret"', f'secret_file = "{SITE.parent}/test.secret"')
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

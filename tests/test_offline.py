"""Offline issuing through the real daemons: the hall, two kiosks on keypads and TCP
ESC/POS printers, a real Mosquitto, and a counter calling through the hall. The hall is
SIGKILLed (or one kiosk cut off at the broker by a relay the test severs) while citizens
keep typing their ID numbers; every citizen gets a ticket, and once the hall is back every
offline ticket is in its queue once and called once, in issue-time order
(docs/architecture.md, "Offline issuing: the lease protocol")."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hall.report import build
from quhao.broker import Mosquitto, free_port
from quhao.idnumber import with_check
from quhao.topics import Topics
from simulators.keys import KeypadFeeder
from simulators.printer import PrinterSimulator
from tests.helpers import SITE, SITE_ID, Daemon, Device, Recorder, hall_daemon, wait_until

T = Topics(SITE_ID)
KIOSKS = ("kiosk-K1", "kiosk-K2")
LEASE = 4  # numbers per block: small, so a test runs one out
# The kiosk gives up on the hall after two attempts of half a second (2 s × 3 by default).
DEVICES = f"\n[devices]\nhall_timeout_ms = 500\nhall_attempts = 2\nlease_numbers = {LEASE}\n"
OFFLINE = "离线取号"
OUT_OF_LEASE = "暂停服务：系统连接中断，离线号已用完"  # the status while out of service
NO_LEASE = "暂停服务：系统连接中断，本机离线号已用完"  # the screen, for a service used up


def citizen(n: int) -> str:
    return with_check(f"44010619850505{n:03d}")


class Relay:
    """A TCP relay between one kiosk and the broker that the test can sever (every
    connection closed, new ones refused) and restore on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(8)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def sever(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            conns, self._conns = self._conns, []
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
            server.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # severed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def offline_site(tmp: Path, printers: dict[str, int]) -> Path:
    text = SITE.read_text()
    for name, port in printers.items():
        text = text.replace(
            f'[[kiosks]]\nname = "{name}"\n',
            f'[[kiosks]]\nname = "{name}"\n'
            f'keypad = "events://{tmp}/keys-{name}.fifo"\n'
            f'printer = "tcp://127.0.0.1:{port}"\n',
        )
    site = tmp / "site.toml"
    site.write_text(text + DEVICES)
    (tmp / "test.secret").write_text((SITE.parent / "test.secret").read_text())
    return site


@dataclass
class Kiosk:
    name: str
    daemon: Daemon
    printer: PrinterSimulator
    keys: KeypadFeeder
    recorder: Recorder
    printed: list[str] = field(default_factory=list)  # ticket texts, in order

    def status(self) -> dict[str, Any]:
        return self.recorder.last(T.status(self.name)) or {}

    def offline(self) -> dict[str, Any]:
        offline: dict[str, Any] = self.status().get("offline", {})
        return offline

    def holds_a_block(self) -> bool:
        return bool(self.offline().get("lease_left", {}).get("social") == LEASE)

    def handed_over(self) -> bool:
        return self.offline().get("to_hand_over") == 0 and not self.offline()["issuing"]

    def issuing_offline(self) -> bool:
        return bool(self.offline().get("issuing"))

    def take(self, idnumber: str, key: str = "KEY_F1") -> str:
        """A citizen types their ID number (for 社保业务) and takes the printed ticket."""
        before = len(self.printer.wait_for_tickets(0))  # cut so far (delivered lags)
        self.keys.type(key, *[f"KEY_{c}" for c in idnumber], "KEY_ENTER")
        text = self.printer.wait_for_tickets(before + 1, timeout=15)[-1].text
        self.printed.append(text)
        return text

    def number(self, text: str) -> str:
        numbers = [w for w in text.split() if len(w) == 4 and w[0] in "ABK" and w[1:].isdigit()]
        assert numbers, text
        return numbers[0]


@dataclass
class Hall:
    tmp: Path
    broker: Mosquitto
    hall: Daemon
    kiosks: dict[str, Kiosk]
    recorder: Recorder
    relay: Relay

    def events(self, kind: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.tmp / "hall" / "hall.sqlite") as db:
            rows = db.execute("SELECT data FROM events WHERE type = ? ORDER BY seq", (kind,))
            return [json.loads(data) for (data,) in rows]

    def leased(self) -> None:
        """Both kiosks hold a block of 社保业务."""
        for k in self.kiosks.values():
            wait_until(k.holds_a_block, timeout=20, what=f"{k.name}'s lease")

    def handed_over(self) -> None:
        for k in self.kiosks.values():
            wait_until(k.handed_over, timeout=30, what=f"{k.name} to hand over")


@pytest.fixture
def hall(broker: Mosquitto, tmp_path: Path) -> Iterator[Hall]:
    """The hall; kiosk-K1 straight on the broker, kiosk-K2 through a relay."""
    printers = {
        k: PrinterSimulator(tmp_path / f"tickets-{k}", port=free_port()).start() for k in KIOSKS
    }
    site = offline_site(tmp_path, {k: p.port or 0 for k, p in printers.items()})
    relay = Relay(broker.port)
    recorder = Recorder(broker.url, "quhao/#", client_id="offline-test-recorder")
    hall_proc = hall_daemon(broker.url, tmp_path / "hall", config=site).launch()
    kiosks = {}
    for name in KIOSKS:
        url = relay.url if name == "kiosk-K2" else broker.url
        daemon = Daemon(
            [
                "kiosk",
                "--config",
                str(site),
                "--broker",
                url,
                "--device",
                name,
                "--state-dir",
                str(tmp_path / "kiosks"),
                "--log-level",
                "DEBUG",
            ],
            tmp_path / f"{name}.log",
            f"kiosk {name} serving",
        ).launch()
        keys = KeypadFeeder(tmp_path / f"keys-{name}.fifo")
        kiosks[name] = Kiosk(name, daemon, printers[name], keys, recorder)
    hall_proc.wait_ready(30)  # side by side with two kiosks
    for k in kiosks.values():
        k.daemon.wait_ready(30)
    running = Hall(tmp_path, broker, hall_proc, kiosks, recorder, relay)
    running.leased()
    yield running
    for k in kiosks.values():
        assert k.daemon.stop() == 0, k.daemon.log()
        k.keys.close()
        k.printer.close()
    hall_proc.stop()
    relay.sever()
    recorder.close()


def called_in_order(hall: Hall) -> list[str]:
    """A clerk at window 1 calls (and finishes) until nobody waits."""
    counter = Device(hall.broker.url, "counter-W1")
    numbers = []
    while (ticket := counter.request("call")["ticket"]) is not None:
        numbers.append(ticket["number"])
        counter.request("finish")
    counter.close()
    return numbers


@pytest.mark.long
def test_hall_killed_every_citizen_gets_a_ticket_called_once_in_order(hall: Hall) -> None:
    k1, k2 = hall.kiosks.values()
    online = k1.number(k1.take(citizen(1)))
    assert online == "A001"
    hall.hall.kill()  # SIGKILL: no goodbye
    order: list[str] = []
    for n in range(2, 8):  # six citizens, alternating kiosks
        kiosk = (k1, k2)[n % 2]
        text = kiosk.take(citizen(n))
        assert OFFLINE in text and "前面" not in text, text
        order.append(kiosk.number(text))
    for k in (k1, k2):
        wait_until(k.issuing_offline, what="offline issuing said")
        assert k.status()["offline"]["lease_left"]["social"] == LEASE - 3
        assert k.status()["offline"]["to_hand_over"] == 3
        assert k.status()["state"] == "in_service"
    assert all(int(n[1:]) > 990 for n in order), order  # from the top: A99x
    hall.hall.start(30)
    hall.handed_over()
    offline = [e for e in hall.events("ticket.issued") if e.get("offline")]
    assert sorted(e["number"] for e in offline) == sorted(order)
    assert called_in_order(hall) == [online, *order]  # issue time, among its service
    after = k2.number(k2.take(citizen(9)))
    assert after == "A002"  # online numbering stayed contiguous
    printed = [k.number(t) for k in (k1, k2) for t in k.printed]
    assert len(printed) == len(set(printed)) == 8
    report = build(hall.tmp / "hall" / "hall.sqlite", offline[0]["day"])
    assert (report.total.issued, report.total.offline) == (8, 6)
    assert report.services["social"].offline == 6


@pytest.mark.long
def test_one_kiosk_cut_off_at_the_broker_issues_offline_and_hands_over(hall: Hall) -> None:
    """The late-delivery race, for real: kiosk-K2's MQTT client keeps the `issue`s it gave
    up on and sends them on reconnecting, about when it hands over. The first is named by
    the offline ticket printed instead; once its lease is used up, the next is given up
    with nothing printed and handed over by its rid alone. Whichever reaches the hall
    first, no ticket nobody holds is left in the queue: the handover voids the online
    ticket issued for a request, or the request, coming after, is refused `superseded`."""
    k1, k2 = hall.kiosks.values()
    hall.relay.sever()
    first = k2.take(citizen(1))  # asked the hall first: not answered, printed offline
    assert OFFLINE in first
    assert k1.number(k1.take(citizen(2))) == "A001"  # the hall serves the others
    rest = [k2.take(citizen(n)) for n in range(3, LEASE + 2)]  # known cut off: at once
    assert all(OFFLINE in text for text in rest)
    k2.keys.type("KEY_F1", *[f"KEY_{c}" for c in citizen(9)], "KEY_ENTER")  # none left
    record = hall.tmp / "kiosks" / "kiosk-K2.offline.sqlite"

    def given_up() -> list[str]:
        with contextlib.closing(sqlite3.connect(record)) as db:
            return [rid for (rid,) in db.execute("SELECT rid FROM abandoned")]

    [alone] = wait_until(given_up, what="the request given up with nothing printed")
    assert len(k2.printer.wait_for_tickets(0)) == LEASE  # nothing more printed
    assert not [e for e in hall.events("ticket.issued") if e.get("offline")]
    hall.relay.restore()  # (its status while cut off never reached the broker)

    def offline_placed() -> list[dict[str, Any]] | None:
        placed = [e for e in hall.events("ticket.issued") if e.get("offline")]
        return placed if len(placed) == LEASE else None

    placed = wait_until(offline_placed, timeout=30, what="the handover")
    hall.handed_over()
    wait_until(lambda: k2.offline().get("given_up") == 0, what="the given-up rid acknowledged")
    assert given_up() == []
    offline = [k2.number(t) for t in k2.printed]
    assert sorted(e["number"] for e in placed) == sorted(offline)
    assert [e["rid"] for e in hall.events("request.abandoned")] == [alone]
    [named] = [e for e in placed if e.get("abandoned_rid")]  # the first: it asked the hall

    def settled(rid: str, voided_by: dict[str, Any]) -> str | None:
        """How the resent request went: the ticket issued for it voided at the handover,
        or the request refused after it (None: not there yet)."""
        voided = [e for e in hall.events("ticket.voided") if voided_by.items() <= e.items()]
        if voided:
            assert len(voided) == 1, voided
            return "voided at the handover"
        with sqlite3.connect(hall.tmp / "hall" / "hall.sqlite") as db:
            row = db.execute(
                "SELECT response FROM requests WHERE device = 'kiosk-K2' AND rid = ?", (rid,)
            ).fetchone()
        if row is None:
            return None
        code = json.loads(row[0]).get("error", {}).get("code")
        assert code == "superseded", row  # never a ticket issued after the handover
        return "refused after the handover"

    how = wait_until(
        lambda: settled(named["abandoned_rid"], {"superseded_by": named["ticket"]}),
        timeout=20,
        what="kiosk-K2's resent issue named by its offline ticket",
    )
    alone_how = wait_until(
        lambda: settled(alone, {"reason": "abandoned by the kiosk"}),
        timeout=20,
        what="kiosk-K2's resent issue given up alone",
    )
    assert len(k2.printer.wait_for_tickets(0)) == LEASE, how  # a late answer prints nothing
    with sqlite3.connect(hall.tmp / "hall" / "hall.sqlite") as db:
        waiting = [n for (n,) in db.execute("SELECT number FROM tickets WHERE status = 'waiting'")]
    assert sorted(waiting) == sorted(["A001", *offline]), (how, alone_how)  # what was printed
    assert called_in_order(hall) == [offline[0], "A001", *offline[1:]]  # by issue time


@pytest.mark.long
def test_same_person_over_quota_at_two_cut_off_kiosks_is_an_alert_not_a_cancel(
    hall: Hall,
) -> None:
    k1, k2 = hall.kiosks.values()
    hall.hall.kill()
    person = citizen(5)  # 社保业务: two tickets in two hours
    numbers = [k1.number(k1.take(person)), k1.number(k1.take(person)), k2.number(k2.take(person))]
    hall.hall.start(30)
    hall.handed_over()
    alerts = wait_until(lambda: hall.events("alert.quota_breach"), what="the quota breach alert")
    assert {a["number"] for a in alerts} <= set(numbers)
    with sqlite3.connect(hall.tmp / "hall" / "hall.sqlite") as db:
        rows = db.execute("SELECT number, status FROM tickets").fetchall()
    assert sorted(rows) == sorted((n, "waiting") for n in numbers)  # every ticket stands


@pytest.mark.long
def test_a_used_up_lease_is_out_of_service_with_a_clear_message(hall: Hall) -> None:
    k1 = hall.kiosks["kiosk-K1"]
    services = {"social": "KEY_F1", "tax": "KEY_F2", "enquiry": "KEY_F3"}  # the site's order
    left = wait_until(
        lambda: (
            all(k1.offline().get("lease_left", {}).get(s) for s in services)
            and dict(k1.offline()["lease_left"])
        ),
        what="a block of every service",
    )
    hall.hall.kill()
    n = 20
    for service, key in services.items():
        for _ in range(left[service]):
            assert OFFLINE in k1.take(citizen(n), key)
            n += 1
        if service == "social":  # a service used up: that service says so, others go on
            k1.keys.type("KEY_F1", *[f"KEY_{c}" for c in citizen(n)], "KEY_ENTER")
            wait_until(lambda: k1.status().get("message") == NO_LEASE, what="no lease said")
    wait_until(lambda: k1.status().get("state") == "out_of_service", what="out of service")
    assert "hall not reachable" in k1.status()["reasons"]
    assert k1.status()["message"] == OUT_OF_LEASE
    assert len(k1.printer.wait_for_tickets(0)) == sum(left.values())


def test_a_handover_voids_only_its_own_kiosks_tickets_and_refuses_bad_abandoned_rids(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Abuse of `abandoned_rid` and `abandoned` at a real hall: the kiosk is the one in
    the topic, so a handover naming another kiosk's request voids nothing; a malformed
    one is `bad_request`; a flood of handovers with random rids remembers no more than
    the tickets placed from the kiosk's own lease, or the newest 1000 given-up rids."""
    hall = hall_daemon(broker.url, tmp_path / "hall").start()
    k1, k2 = Device(broker.url, "kiosk-K1"), Device(broker.url, "kiosk-K2")
    key = {"key": "ab" * 32}
    try:
        theirs = k1.request("issue", rid="k1-issue", service="social", person=key)["ticket"]
        lease = k2.request("lease", service="social")["lease"]
        base = {"service": "social", "issued_at": time.time(), "person": key}
        base["number"] = lease["last"]
        for bad in ("", "x" * 129, 7, ["k1-issue"]):
            answer = k2.request("handover", tickets=[{**base, "rid": "o-1", "abandoned_rid": bad}])
            assert answer["error"]["code"] == "bad_request", answer
            assert "abandoned_rid" in answer["error"]["message"], answer
        answer = k2.request(
            "handover", tickets=[{**base, "rid": "o-1", "abandoned_rid": "k1-issue"}]
        )
        assert answer["ok"] and answer["tickets"][0]["placed"], answer
        assert "superseded" not in answer["tickets"][0]
        for _ in range(40):  # each: 50 tickets, random numbers and rids
            flood = [  # (no person: 50 tickets must fit in the hall's 8 KB a request)
                {
                    "service": "social",
                    "issued_at": base["issued_at"],
                    "rid": uuid.uuid4().hex[:16],
                    "number": n,
                    "abandoned_rid": uuid.uuid4().hex[:16],
                }
                for n in range(lease["first"] - 20, lease["first"] + 30)  # 50, the most
            ]
            flooded = k2.request("handover", tickets=flood)
            assert flooded["ok"], flooded
        with sqlite3.connect(tmp_path / "hall" / "hall.sqlite") as db:
            rows = dict(db.execute("SELECT number, status FROM tickets").fetchall())
            offline = db.execute(
                "SELECT COUNT(*) FROM events WHERE type = 'ticket.issued' "
                "AND json_extract(data, '$.abandoned_rid') IS NOT NULL"
            ).fetchone()[0]
        assert rows[theirs["number"]] == "waiting"  # kiosk-K1's ticket stands
        assert offline <= lease["last"] - lease["first"] + 1  # one per leased number at most
        assert "voided" not in rows.values()
        assert k1.request("issue", service="social", person={"key": "cd" * 32})["ok"]
        # Requests given up with nothing printed, by their rids alone: the same rules.
        answer = k2.request("handover", abandoned=["k1-issue"])  # kiosk-K1's rid
        assert answer["ok"] and answer["abandoned"] == [{"rid": "k1-issue"}], answer
        too_many = [f"r{n}" for n in range(65)]
        for bad in ("k1-issue", [""], ["x" * 129], [7], [["r"]], too_many):
            answer = k2.request("handover", abandoned=bad)
            assert answer["error"]["code"] == "bad_request", answer
            assert "abandoned" in answer["error"]["message"], answer
        flood = [uuid.uuid4().hex for _ in range(20 * 64)]  # more than the hall keeps
        for n in range(0, len(flood), 64):
            assert k2.request("handover", abandoned=flood[n : n + 64])["ok"]
        person = {"key": "ef" * 32}
        oldest = k2.request("issue", rid=flood[0], service="enquiry", person=person)
        assert oldest["ok"], oldest  # forgotten: the hall keeps the newest 1000 a kiosk
        newest = k2.request("issue", rid=flood[-1], service="enquiry", person=person)
        assert newest["error"]["code"] == "superseded", newest
        with sqlite3.connect(tmp_path / "hall" / "hall.sqlite") as db:
            rows = dict(db.execute("SELECT number, status FROM tickets").fetchall())
        assert rows[theirs["number"]] == "waiting" and "voided" not in rows.values()
    finally:
        k1.close()
        k2.close()
        hall.stop()

"""The hall as a real process behind a real Mosquitto, spoken to over MQTT v5."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from quhao.broker import Mosquitto
from quhao.mqtt import Bus
from quhao.topics import Topics
from tests.helpers import SITE_ID, Recorder, hall_daemon, wait_until

T = Topics(SITE_ID)
PERSON = {"key": "ab" * 16, "age": 30}


def person(n: int) -> dict:
    return {"key": f"{n:064x}", "age": 40}


def test_issue_and_call_survive_sigkill(broker: Mosquitto, tmp_path: Path, device) -> None:
    state = tmp_path / "hall"
    hall = hall_daemon(broker.url, state).start()
    kiosk, counter = device("kiosk-K1"), device("counter-W1")
    numbers = [
        kiosk.request("issue", service="social", person=person(n))["ticket"]["number"]
        for n in range(3)
    ]
    assert numbers == ["A001", "A002", "A003"]
    called = counter.request("call")
    assert called["ok"] and called["ticket"]["number"] == "A001"

    hall.kill()  # SIGKILL: no chance to flush or say goodbye
    recorder = Recorder(broker.url, T.window_state(1), T.hall_state, client_id="after-kill")
    hall.start()
    # the retained state is published again by the new process, and is the same
    window = recorder.wait_for(T.window_state(1), lambda p: p["ticket"] == "A001")
    assert window["status"] == "serving"
    hall_state = recorder.wait_for(
        T.hall_state, lambda p: p["updated"] > called["ticket"]["issued_at"]
    )
    social = next(s for s in hall_state["services"] if s["id"] == "social")
    assert social["waiting"] == 2 and social["issued"] == 3
    # numbering continues, nothing lost
    assert kiosk.request("issue", service="social", person=person(9))["ticket"]["number"] == "A004"
    assert counter.request("call")["ticket"]["number"] == "A002"
    recorder.close()
    assert hall.stop() == 0


def test_same_rid_twice_gives_one_ticket(hall, device) -> None:
    kiosk = device("kiosk-K1")
    first = kiosk.request("issue", rid="r-42", service="social", person=PERSON)
    again = kiosk.request("issue", rid="r-42", service="social", person=PERSON)
    assert first == again and first["ticket"]["number"] == "A001"
    assert kiosk.request("issue", service="social", person=PERSON)["ticket"]["number"] == "A002"
    # a refusal is remembered too: the same rid does not become a ticket later
    refused = kiosk.request("issue", rid="r-43", service="social", person=PERSON)
    assert refused["error"]["code"] == "quota_exceeded"
    assert kiosk.request("issue", rid="r-43", service="social", person=PERSON) == refused


def test_a_client_no_one_here_wrote(broker: Mosquitto, hall) -> None:
    """mosquitto_rr (mosquitto-clients) issues a ticket per the contract."""
    payload = {"rid": "rr-1", "service": "social", "person": PERSON}
    result = subprocess.run(
        [
            "mosquitto_rr",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-V",
            "5",
            "-q",
            "1",
            "-i",
            "rr-client",
            "-t",
            T.request("kiosk-K2", "issue"),
            "-e",
            T.reply("kiosk-K2"),
            "-m",
            json.dumps(payload),
            "-W",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    )
    response = json.loads(result.stdout)
    assert response["ok"] is True and response["rid"] == "rr-1"
    assert response["ticket"]["number"] == "A001" and response["ticket"]["ahead"] == 0


def _raw_request(bus: Bus, device: str, action: str, payload: bytes) -> None:
    bus.publish(
        T.request(device, action), payload, response_topic=T.reply(device), correlation=b"raw"
    )


def test_bad_input_gets_an_error_code_and_changes_nothing(
    broker: Mosquitto, hall, device, tmp_path: Path
) -> None:
    kiosk = device("kiosk-K1")
    assert kiosk.request("issue", service="social", person=PERSON)["ok"]
    recorder = Recorder(
        broker.url,
        T.reply("kiosk-K1"),
        T.reply("counter-W1"),
        T.hall_state,
        "quhao/testhall/event/#",
    )
    before = recorder.wait_for(T.hall_state, lambda p: p["services"][0]["issued"] == 1)
    events_before = len(recorder.payloads(T.event("ticket.issued")))

    raw = Bus(broker.url, "raw-client")
    raw.start()
    _raw_request(raw, "kiosk-K1", "issue", b"this is not json")
    _raw_request(raw, "kiosk-K1", "issue", b"\xff\xfe")
    _raw_request(raw, "kiosk-K1", "issue", b"[1, 2]")
    _raw_request(raw, "kiosk-K1", "issue", json.dumps({"service": "social"}).encode())  # no rid
    replies = wait_until(
        lambda: (
            len(recorder.payloads(T.reply("kiosk-K1"))) >= 4
            and recorder.payloads(T.reply("kiosk-K1"))
        ),
        what="four replies",
    )
    assert [r["error"]["code"] for r in replies] == ["bad_request"] * 4
    assert "not JSON" in replies[0]["error"]["message"]
    raw.stop()

    counter = device("counter-W1")
    cases = [
        (kiosk, "issue", {"person": PERSON}, "bad_request"),  # missing service
        (kiosk, "issue", {"service": "social", "person": {"age": 3}}, "bad_request"),
        (kiosk, "issue", {"service": "passports", "person": PERSON}, "unknown_service"),
        (kiosk, "teleport", {}, "unknown_action"),
        (counter, "issue", {"service": "social", "person": PERSON}, "forbidden"),
        (kiosk, "call", {}, "forbidden"),
        (counter, "rate", {"ticket": "A001", "level": 9}, "bad_state"),
    ]
    for dev, action, payload, code in cases:
        response = dev.request(action, **payload)
        assert response["ok"] is False and response["error"]["code"] == code, (action, response)
        assert response["error"]["message"]

    assert hall.alive
    assert len(recorder.payloads(T.event("ticket.issued"))) == events_before
    assert recorder.last(T.hall_state)["services"] == before["services"]
    after = kiosk.request("issue", service="social", person=person(5))
    assert after["ticket"]["number"] == "A002"  # nothing was consumed by the bad requests
    recorder.close()


def test_sigterm_stops_cleanly_and_says_offline(broker: Mosquitto, hall) -> None:
    recorder = Recorder(broker.url, T.availability("hall"))
    recorder.wait_for(T.availability("hall"), lambda p: p["state"] == "online")
    assert hall.stop() == 0
    recorder.wait_for(T.availability("hall"), lambda p: p["state"] == "offline")
    recorder.close()


def test_sigkill_fires_the_last_will(broker: Mosquitto, hall) -> None:
    recorder = Recorder(broker.url, T.availability("hall"))
    recorder.wait_for(T.availability("hall"), lambda p: p["state"] == "online")
    hall.kill()
    recorder.wait_for(T.availability("hall"), lambda p: p["state"] == "offline")
    recorder.close()


def test_events_and_state_carry_no_person_key(
    broker: Mosquitto, hall, device, tmp_path: Path
) -> None:
    recorder = Recorder(broker.url, "quhao/#")
    kiosk, counter = device("kiosk-K1"), device("counter-W1")
    key = "cd" * 32
    kiosk.request("issue", service="social", person={"key": key, "age": 70})
    counter.request("call")
    counter.request("finish")
    recorder.wait_for(T.event("ticket.finished"))
    from_hall = [m for m in recorder.messages if "/hall/req/" not in m.topic]
    assert len(from_hall) > 5
    assert key.encode() not in b"".join(m.payload for m in from_hall)
    issued = recorder.wait_for(T.event("ticket.issued"))
    assert issued["number"] == "A001" and issued["priority"] == "elderly"
    recorder.close()


def test_database_refuses_a_duplicate_number(hall, device, tmp_path: Path) -> None:
    """The UNIQUE constraint is the last line of defence, independent of the engine."""
    kiosk = device("kiosk-K1")
    kiosk.request("issue", service="social", person=PERSON)
    db = sqlite3.connect(tmp_path / "hall" / "hall.sqlite")
    row = db.execute(
        "SELECT id, day, origin_service, number, service, status, kiosk, issued_at FROM tickets"
    ).fetchone()
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO tickets (id, day, origin_service, number, service, status, kiosk,"
            " issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("other", *row[1:]),
        )
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_ctl_shows_the_queue(broker: Mosquitto, hall, device) -> None:
    kiosk, counter = device("kiosk-K1"), device("counter-W1")
    for n in range(3):
        kiosk.request("issue", service="social", person=person(n))
    counter.request("call")
    result = subprocess.run(
        [*_quhao(), "ctl", "--config", "tests/sites/small.toml", "--broker", broker.url, "--once"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stderr
    assert "社保业务" in result.stdout and "A001" in result.stdout
    assert "serving" in result.stdout


def _quhao() -> list[str]:
    import sys

    return [sys.executable, "-m", "cli"]


def test_sighup_adds_a_window_live_and_survives_a_broken_file(
    broker: Mosquitto, tmp_path: Path, device
) -> None:
    import signal

    from tests.helpers import SITE

    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text())
    (tmp_path / "test.secret").write_text((SITE.parent / "test.secret").read_text())
    hall = hall_daemon(broker.url, tmp_path / "hall", config=site).start()
    kiosk = device("kiosk-K1")
    kiosk.request("issue", service="social", person=PERSON)
    newcomer = device("counter-W3")
    assert newcomer.request("call")["error"]["code"] == "forbidden"

    site.write_text(
        site.read_text() + '\n[[windows]]\nnumber = 3\nservices = ["social"]\n'
        '\n[[counters]]\nname = "counter-W3"\nwindow = 3\n'
    )
    hall.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in hall.log(), what="reload")
    assert newcomer.request("call")["ticket"]["number"] == "A001"

    good = site.read_text()
    site.write_text(good.replace("interleave = 2", "interleave = zwei"))
    hall.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration not reloaded" in hall.log(), what="refusal")
    assert f"{site}:" in hall.log() and hall.alive
    assert newcomer.request("finish")["ok"]
    assert hall.stop() == 0


def test_sighup_keeps_the_secret_file_given_on_the_command_line(
    broker: Mosquitto, tmp_path: Path, device
) -> None:
    """`--secret-file` (a systemd credential) beats the site file's `secret_file`, on
    SIGHUP as at start: staff card proofs made with it stay valid and the reload takes
    effect; a secret changed on disk is not taken live (restart), and says so."""
    import signal

    from quhao.staffauth import card_proof
    from tests.helpers import SITE

    secret = (SITE.parent / "test.secret").read_bytes().strip()
    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace('"test.secret"', '"decoy.secret"'))
    (tmp_path / "decoy.secret").write_text("a-decoy-secret-the-hall-must-not-use\n")
    credential = tmp_path / "credentials" / "site.secret"
    credential.parent.mkdir()
    credential.write_bytes(secret + b"\n")
    hall = hall_daemon(broker.url, tmp_path / "hall", config=site)
    hall.args += ["--secret-file", str(credential)]
    hall.start()
    site.write_text(
        site.read_text() + '\n[[windows]]\nnumber = 3\nservices = ["social"]\n'
        '\n[[counters]]\nname = "counter-W3"\nwindow = 3\n'
    )
    hall.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in hall.log(), what="reload")
    newcomer = device("counter-W3")  # configured by the reload
    answer = newcomer.request("login", card=card_proof(secret, "04A10002"))
    assert answer["staff"]["id"] == "S002", answer
    decoy = card_proof(b"a-decoy-secret-the-hall-must-not-use", "04A10001")
    assert device("counter-W1").request("login", card=decoy)["error"]["code"] == "forbidden"

    credential.write_text("a-new-secret-put-in-place-of-the-old\n")
    hall.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "the site secret changed" in hall.log(), what="the refusal")
    answer = device("counter-W2").request("login", card=card_proof(secret, "04A10001"))
    assert answer["staff"]["id"] == "S001", answer  # still the secret read at start
    assert hall.stop() == 0

"""The rater identity: window n's rating touch screen is `rater-W{n}`, which the broker
lets publish only its own rate request and the hall takes a rating from for window n
only. Against the broker configuration `quhao broker gen` writes (users, ACL), the real
hall and the screens daemon logging in with the generated credentials."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hall.engine import Engine
from quhao.broker import free_port
from quhao.config import load
from quhao.mqtt import Bus, Message
from quhao.rpc import HallClient
from quhao.topics import Topics
from quhao.wire import decode_object
from tests.helpers import ROOT, Daemon, GeneratedBroker, generated_broker, wait_until

SITE = ROOT / "tests" / "sites" / "screens.toml"
TOPICS = Topics("screenhall")


def login(gb: GeneratedBroker, user: str) -> Bus:
    bus = Bus(f"mqtt://127.0.0.1:{gb.port}", user, password=gb.password(user))
    bus.start()
    return bus


@pytest.fixture
def hall(tmp_path: Path) -> Iterator[tuple[GeneratedBroker, str]]:
    gb = generated_broker(SITE, tmp_path / "broker")
    url = f"mqtt://127.0.0.1:{gb.port}"
    common = ["--config", str(SITE), "--broker", url, "--credentials", str(gb.credentials)]
    port = free_port()
    daemons = [
        Daemon(
            ["hall", *common, "--state-dir", str(tmp_path / "hall")],
            tmp_path / "hall.log",
            "serving",
        ).launch(),
        Daemon(
            ["screens", *common, "--port", str(port), "--log-level", "DEBUG"],
            tmp_path / "screens.log",
            "connected to the broker as display",
        ).launch(),
    ]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        yield gb, f"http://127.0.0.1:{port}"
    finally:
        for daemon in daemons:
            daemon.stop()
        gb.close()


def test_broker_gen_gives_each_window_a_rater_that_may_only_rate_for_itself() -> None:
    from quhao.brokergen import acl, users

    config = load(SITE)
    assert "rater-W2" in users(config) and "rater-W41" in users(config)
    block = acl(config).split("user rater-W2\n", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines() == [
        "topic write quhao/screenhall/hall/req/rater-W2/rate",
        "topic read quhao/screenhall/reply/rater-W2",
        "topic read quhao/screenhall/reply/rater-W2/#",
    ]


def test_the_hall_takes_from_a_rater_only_a_rating_of_its_own_window() -> None:
    engine = Engine(load(SITE), None)
    now = 1795395600.0
    ticket = engine.handle("kiosk-K1", "issue", {"service": "tax", "person": None}, now)
    tid = ticket.response["ticket"]["id"]
    engine.handle("counter-W2", "call", {}, now + 1)
    engine.handle("counter-W2", "finish", {}, now + 2)
    assert engine.handle("rater-W2", "call", {}, now + 3).error.code == "forbidden"
    assert engine.handle("rater-W99", "rate", {"ticket": tid, "level": 5}, now).error.code == (
        "forbidden"  # no window 99: not a device of the site
    )
    other = engine.handle("rater-W3", "rate", {"ticket": tid, "level": 5}, now + 3)
    assert other.error is not None and other.error.code == "bad_state"
    rated = engine.handle("rater-W2", "rate", {"ticket": tid, "level": 5}, now + 3)
    assert rated.error is None and rated.response["changed"] is True
    again = engine.handle("counter-W2", "rate", {"ticket": tid, "level": None}, now + 4)
    assert again.response["changed"] is False  # the pad's timeout after a touch: rated once


def test_a_touch_rating_goes_as_the_windows_rater_and_no_other_window_can_rate(
    hall: tuple[GeneratedBroker, str],
) -> None:
    gb, base = hall
    kiosk_bus, counter_bus = login(gb, "kiosk-K1"), login(gb, "counter-W2")
    events: list[dict[str, Any]] = []
    monitor = Bus(f"mqtt://127.0.0.1:{gb.port}", "monitor", password=gb.password("monitor"))
    monitor.subscribe(TOPICS.event("#"), lambda m: events.append(decode_object(m.payload)))
    monitor.start()
    raters = {}
    try:
        kiosk = HallClient(kiosk_bus, TOPICS, "kiosk-K1")
        counter = HallClient(counter_bus, TOPICS, "counter-W2")
        tid = kiosk.request("issue", {"service": "tax", "person": None})["ticket"]["id"]
        counter.request("call")
        counter.request("finish")
        for name in ("rater-W2", "rater-W3"):
            raters[name] = login(gb, name)
        answers: list[Message] = []
        got = threading.Event()

        def keep(message: Message) -> None:
            answers.append(message)
            got.set()

        w3 = raters["rater-W3"]
        w3.subscribe(TOPICS.reply("rater-W3"), keep)
        # the ACL: rater-W3 publishing as rater-W2, or another action, never reaches the hall
        for topic in (TOPICS.request("rater-W2", "rate"), TOPICS.request("rater-W3", "call")):
            body = json.dumps({"rid": "forged", "ticket": tid, "level": 1, "reason": "x"})
            w3.publish(topic, body.encode(), response_topic=TOPICS.reply("rater-W3"))
        # its own rate topic reaches the hall, which refuses another window's ticket
        body = json.dumps({"rid": "w3", "ticket": tid, "level": 1, "reason": "x"})
        w3.publish(
            TOPICS.request("rater-W3", "rate"),
            body.encode(),
            response_topic=TOPICS.reply("rater-W3"),
        )
        wait_until(got.is_set, 5, "the hall's answer to rater-W3")
        answer = decode_object(answers[0].payload)
        assert answer["rid"] == "w3" and answer["error"]["code"] == "bad_state"
        assert len(answers) == 1  # the forged ones were dropped by the broker
        assert not [e for e in events if e["type"] == "ticket.rated"]
        # the window screen's touch, through the daemon, as rater-W2
        wait_until(lambda: _window_prompt(base, 2) == tid, 5, "the rating prompt at window 2")
        request = urllib.request.Request(
            base + "/window/2/rate",
            data=json.dumps({"ticket": tid, "level": 2, "reason": "服务态度差"}).encode(),
            headers={"Content-Type": "application/json", "Origin": base},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"ok": True, "changed": True}
        rated = wait_until(lambda: [e for e in events if e["type"] == "ticket.rated"], 5, "rated")
        assert (rated[0]["window"], rated[0]["level"], rated[0]["reason"]) == (2, 2, "服务态度差")
    finally:
        for bus in (kiosk_bus, counter_bus, monitor, *raters.values()):
            bus.stop()


def _window_prompt(base: str, window: int) -> str | None:
    """The ticket the window screen asks a rating for (its stream's first snapshot)."""
    with urllib.request.urlopen(f"{base}/events/window/{window}", timeout=5) as stream:
        for raw in stream:
            line = raw.decode()
            if line.startswith("data: "):
                rating = json.loads(line[6:])["rating"]
                return rating["ticket"] if rating else None
    return None

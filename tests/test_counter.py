"""The counter daemon through real parts: Mosquitto, the hall, ptys, FIFOs."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quhao.broker import Mosquitto
from quhao.staffauth import card_proof
from quhao.topics import Topics
from simulators.idcard import PcscStack, VirtualIdCard
from simulators.keys import KeypadFeeder
from simulators.led import LedSimulator
from tests.helpers import (
    SITE,
    SITE_ID,
    Daemon,
    Device,
    Recorder,
    hall_daemon,
    wait_for_reader,
    wait_until,
)

T = Topics(SITE_ID)
STAFF_READER = "Virtual PCD 00 01"  # counter-W1's, vpcd slot 1
SECRET = (SITE.parent / "test.secret").read_bytes().strip()


def counter_site(tmp: Path) -> Path:
    """The small test hall with keypads on FIFOs and LED displays on ptys under tmp."""
    text = SITE.read_text()
    text = text[: text.index("[[counters]]")]
    text = text.replace("[queue]", "[queue]\nrating_timeout_s = 1")
    for name, window, led in (
        ("counter-W1", 1, True),
        ("counter-W1b", 1, False),
        ("counter-W2", 2, True),
    ):
        text += (
            f'\n[[counters]]\nname = "{name}"\nwindow = {window}\n'
            f'keypad = "events://{tmp}/keys-{name}.fifo"\n'
            f'rating = "events://{tmp}/rate-{name}.fifo"\n'
        )
        if led:
            text += f'display = "serial://{tmp}/led-{window}?addr={window}&baud=9600"\n'
        if name == "counter-W1":
            text += 'reader = "pcsc://?reader=Virtual%20PCD%2000%2001"\n'
            # Shorter than one pcscd poll (400 ms): a card reported gone by pcscd and then
            # back is a new presentation, so the test waits on pcscd, not on a clock.
            text += "card_absent_ms = 100\n"
    site = tmp / "site.toml"
    site.write_text(text)
    (tmp / "test.secret").write_text((SITE.parent / "test.secret").read_text())
    return site


@dataclass
class Hall:
    tmp: Path
    broker: Mosquitto
    site: Path
    hall: Daemon
    counter: Daemon
    kiosk: Device
    leds: dict[int, LedSimulator]
    keys: dict[str, KeypadFeeder]
    rating: dict[str, KeypadFeeder]

    def login(self, counter: str, number: str, pin: str) -> None:
        """Staff number, Enter; the LED asks for the PIN; PIN, Enter."""
        window = 2 if counter == "counter-W2" else 1
        keys = self.keys[counter]
        keys.type(*[f"KEY_KP{d}" for d in number], "KEY_KPENTER")
        self.leds[window].wait_for(lambda t: t == "请输入密码")
        keys.type(*[f"KEY_KP{d}" for d in pin], "KEY_KPENTER")

    def issue(self, n: int, service: str = "social") -> str:
        response = self.kiosk.request(
            "issue", service=service, person={"key": f"{n:064x}", "age": 30}
        )
        return response["ticket"]["number"]


def counter_daemon(broker: Mosquitto, site: Path, tmp: Path) -> Daemon:
    return Daemon(
        [
            "counter",
            "--config",
            str(site),
            "--broker",
            broker.url,
            "--device",
            "counter-W1",
            "--device",
            "counter-W1b",
            "--device",
            "counter-W2",
            "--log-level",
            "DEBUG",
        ],
        tmp / "counter.log",
        "counter serving",
    )


@pytest.fixture
def hall(broker: Mosquitto, tmp_path: Path, pcsc: PcscStack) -> Iterator[Hall]:
    site = counter_site(tmp_path)
    leds = {
        w: LedSimulator(tmp_path / f"led-{w}", w, tmp_path / "snapshots").start() for w in (1, 2)
    }
    keys = {
        n: KeypadFeeder(tmp_path / f"keys-{n}.fifo")
        for n in ("counter-W1", "counter-W1b", "counter-W2")
    }
    rating = {
        n: KeypadFeeder(tmp_path / f"rate-{n}.fifo")
        for n in ("counter-W1", "counter-W1b", "counter-W2")
    }
    hall_proc = hall_daemon(broker.url, tmp_path / "hall", config=site).launch()
    counter = counter_daemon(broker, site, tmp_path).launch()  # side by side with the hall
    hall_proc.wait_ready()
    counter.wait_ready()
    kiosk = Device(broker.url, "kiosk-K1")
    running = Hall(tmp_path, broker, site, hall_proc, counter, kiosk, leds, keys, rating)
    leds[1].wait_for(lambda text: text == "1号窗口")
    yield running
    kiosk.close()
    assert counter.stop() == 0, counter.log()
    hall_proc.stop()
    for led in leds.values():
        led.close()
    for feeder in [*keys.values(), *rating.values()]:
        feeder.close()


def test_call_recall_skip_pause_on_the_led(hall: Hall) -> None:
    hall.issue(1)
    hall.issue(2)
    led, keys = hall.leds[1], hall.keys["counter-W1"]
    keys.tap("KEY_KPENTER")
    assert led.wait_for(lambda t: "A001" in t) == "请 A001 号到 1 号窗口"
    assert led.history[-1].flash
    shown = len(led.history)
    keys.tap("KEY_KPPLUS")  # recall: the same text again, flashing
    wait_until(lambda: len(led.history) > shown and led.history[-1].flash, what="recall")
    assert led.text == "请 A001 号到 1 号窗口"
    keys.tap("KEY_KPMINUS")  # skip
    led.wait_for(lambda t: t == "1号窗口")
    keys.tap("KEY_KPASTERISK")
    led.wait_for(lambda t: t == "暂停服务")
    keys.tap("KEY_KPENTER")  # refused while paused: a short notice, then back
    led.wait_for(lambda t: "暂停中" in t)
    keys.tap("KEY_KPASTERISK")
    led.wait_for(lambda t: t == "1号窗口")
    keys.advance(1.05)  # call is locked for a second after a call press: this one is later
    keys.tap("KEY_KPENTER")
    led.wait_for(lambda t: "A002" in t)
    snapshots = list((hall.tmp / "snapshots").glob("led-1-*.png"))
    assert snapshots


def test_a_doubled_key_press_calls_one_citizen(hall: Hall) -> None:
    for n in range(3):
        hall.issue(n)
    keys = hall.keys["counter-W1"]
    keys.tap("KEY_KPENTER")
    keys.tap("KEY_KPENTER")  # a bounce, 0 ms later
    hall.leds[1].wait_for(lambda t: "A001" in t)
    keys.advance(0.4)  # a doubled press: after the LED changed, well within the lockout
    keys.tap("KEY_KPENTER")
    recorder = Recorder(hall.broker.url, T.hall_state, client_id="doubled")
    wait_until(
        lambda: hall.counter.log().count("KEY_KPENTER ignored: bounce") == 2,
        what="both extra presses ignored",
    )
    # Both were ignored at the keypad, so nothing else was sent: the state is final.
    state = recorder.wait_for(T.hall_state, lambda p: p["windows"][0]["ticket"] == "A001")
    assert state["services"][0]["issued"] == 3 and state["services"][0]["waiting"] == 2
    recorder.close()


def test_two_terminals_at_one_window_call_different_citizens(hall: Hall) -> None:
    hall.issue(1)
    hall.issue(2)
    recorder = Recorder(hall.broker.url, T.window_state(1), client_id="dual")
    hall.keys["counter-W1"].tap("KEY_KPENTER")
    hall.keys["counter-W1b"].tap("KEY_KPENTER")

    def both_serving(p: dict) -> bool:
        tickets = {t["ticket"] for t in p["terminals"] if t["status"] == "serving"}
        return tickets == {"A001", "A002"}

    recorder.wait_for(T.window_state(1), both_serving)
    recorder.close()


def _holds(text: str, pin: str) -> bool:
    """The PIN as a word of its own (not inside a port number or a hex rid)."""
    return re.search(rf"(?<![0-9A-Za-z]){pin}(?![0-9A-Za-z])", text) is not None


def _events(hall: Hall, kind: str) -> list[dict]:
    db = sqlite3.connect(hall.tmp / "hall" / "hall.sqlite")
    rows = db.execute("SELECT data FROM events WHERE type = ?", (kind,)).fetchall()
    db.close()
    import json

    return [json.loads(r[0]) for r in rows]


def test_rating_with_clerk_timeout_and_bad_rating_alert(hall: Hall) -> None:
    for n in range(3):
        hall.issue(n)
    keys, pad = hall.keys["counter-W1"], hall.rating["counter-W1"]
    recorder = Recorder(hall.broker.url, "quhao/testhall/event/#", client_id="rating")
    hall.login("counter-W1", "1", "1111")  # log in as staff 1 (S001)
    hall.leds[1].wait_for(lambda t: "李敏" in t)
    keys.advance(1.05)  # a clerk looks up before calling: the call lockout is over
    keys.tap("KEY_KPENTER")
    hall.leds[1].wait_for(lambda t: "A001" in t)
    keys.tap("KEY_KPDOT")  # finish: the pad is armed
    hall.leds[1].wait_for(lambda t: "李敏" in t)
    pad.tap("KEY_2")  # 满意
    rated = recorder.wait_for(T.event("ticket.rated"))
    assert rated["level"] == 4 and rated["staff"] == "S001" and rated["number"] == "A001"

    keys.advance(1.05)
    keys.tap("KEY_KPENTER")
    hall.leds[1].wait_for(lambda t: "A002" in t)
    keys.tap("KEY_KPDOT")  # nobody rates: unrated after 1 s, never "satisfied"
    unrated = recorder.wait_for(T.event("ticket.rated"), lambda p: p["number"] == "A002")
    assert unrated["level"] is None

    keys.advance(1.05)
    keys.tap("KEY_KPENTER")
    hall.leds[1].wait_for(lambda t: "A003" in t)
    keys.tap("KEY_KPDOT")
    hall.leds[1].wait_for(lambda t: "李敏" in t)
    pad.type("KEY_5", "KEY_2")  # 非常不满意, reason 2: 服务态度差
    alert = recorder.wait_for(T.event("alert.bad_rating"))
    assert alert["level"] == 1 and alert["reason"] == "服务态度差"
    assert alert["window"] == 1 and alert["staff"] == "S001" and alert["number"] == "A003"
    levels = {e["number"]: e["level"] for e in _events(hall, "ticket.rated")}
    assert levels == {"A001": 4, "A002": None, "A003": 1}
    recorder.close()


def test_counter_restart_shows_the_retained_state(hall: Hall) -> None:
    hall.issue(1)
    hall.issue(2)
    hall.keys["counter-W1"].tap("KEY_KPENTER")
    hall.leds[1].wait_for(lambda t: "A001" in t)
    hall.counter.kill()
    # While the counter is down the window moves on (e.g. the clerk used a spare keypad).
    spare = Device(hall.broker.url, "counter-W1")
    assert spare.request("call")["ticket"]["number"] == "A002"
    spare.close()
    assert "A001" in hall.leds[1].text
    hall.counter.start()
    hall.leds[1].wait_for(lambda t: "A002" in t)


def test_unknown_keys_and_corrupt_records_are_ignored(hall: Hall) -> None:
    hall.issue(1)
    keys = hall.keys["counter-W1"]
    keys.tap("KEY_A")
    keys.raw(b"\xde\xad\xbe\xef" * 9)  # not input_event records
    keys.tap("KEY_KPENTER")
    hall.leds[1].wait_for(lambda t: "A001" in t)
    log = hall.counter.log()
    assert "KEY_A ignored: not a caller key" in log
    assert re.search(r"implausible input_event", log)
    assert hall.counter.alive


def test_unplugged_display_is_reported_and_caught_up(hall: Hall) -> None:
    recorder = Recorder(hall.broker.url, T.status("counter-W2"), client_id="unplug")
    recorder.wait_for(T.status("counter-W2"), lambda p: p.get("display") == "ok")
    hall.leds[2].unplug()
    recorder.wait_for(
        T.status("counter-W2"), lambda p: p.get("display", "").startswith(("offline", "no_answer"))
    )
    hall.issue(1, service="tax")
    hall.keys["counter-W2"].tap("KEY_KPENTER")  # called while the display is away
    hall.leds[2].replug()
    hall.leds[2].wait_for(lambda t: "B001" in t)
    recorder.wait_for(T.status("counter-W2"), lambda p: p.get("display") == "ok")
    recorder.close()


def test_transfer_typed_on_the_keypad(hall: Hall) -> None:
    hall.issue(1)
    keys = hall.keys["counter-W1"]
    keys.tap("KEY_KPENTER")
    hall.leds[1].wait_for(lambda t: "A001" in t)
    keys.type("KEY_KPSLASH", "KEY_KP2", "KEY_KPENTER")  # to service 2: tax
    hall.leds[1].wait_for(lambda t: t == "1号窗口")
    hall.keys["counter-W2"].tap("KEY_KPENTER")
    hall.leds[2].wait_for(lambda t: "A001" in t and "2 号窗口" in t)


def test_staff_card_logs_in_and_out(hall: Hall, pcsc: PcscStack) -> None:
    requests = Recorder(hall.broker.url, T.request("counter-W1", "+"), client_id="card")
    card = VirtualIdCard(pcsc.port, slot=1)
    card.insert("04A10002")  # 王芳, S002
    hall.leds[1].wait_for(lambda t: t == "1号窗口 王芳 S002")
    card.remove()
    wait_for_reader(STAFF_READER, card=False)  # gone for longer than card_absent_ms next
    card.insert("04A10002")  # the same card again: log out
    hall.leds[1].wait_for(lambda t: t == "1号窗口")
    card.remove()
    # The counter proved the card with the site secret; the UID never left it.
    login = requests.wait_for(T.request("counter-W1", "login"))
    assert set(login) == {"rid", "card"} and login["card"] == card_proof(SECRET, "04A10002")
    requests.wait_for(T.request("counter-W1", "logout"))
    assert not any(b"04A10002" in m.payload for m in requests.messages)
    requests.close()
    wait_for_reader(STAFF_READER, card=False)
    card.insert("DEADBEEF00000001")  # not a staff card
    hall.leds[1].wait_for(lambda t: t == "非工作人员卡")
    card.remove()


def test_login_by_staff_number_and_pin(hall: Hall) -> None:
    requests = Recorder(hall.broker.url, T.request("counter-W2", "login"), client_id="pin")
    led = hall.leds[2]
    led.wait_for(lambda t: t == "2号窗口")  # the fixture waited for window 1's LED only
    shown = len(led.history)
    hall.login("counter-W2", "002", "2222")  # 002 is S002
    led.wait_for(lambda t: t == "2号窗口 王芳 S002")
    assert led.history[shown].text == "请输入密码"
    assert not any("2222" in s.text for s in led.history)  # the PIN is never shown
    login = requests.wait_for(T.request("counter-W2", "login"))
    assert login["staff"] == "S002" and login["pin"] == "2222"
    assert not _holds(hall.counter.log(), "2222") and not _holds(hall.hall.log(), "2222")
    requests.close()
    # another key while the LED asks for the PIN cancels the login, and does nothing else
    hall.issue(1, service="tax")
    hall.keys["counter-W2"].type("KEY_KP1", "KEY_KPENTER")
    led.wait_for(lambda t: t == "请输入密码")
    hall.keys["counter-W2"].tap("KEY_KPMINUS")
    led.wait_for(lambda t: t == "2号窗口 王芳 S002")
    assert "KEY_KPMINUS ignored: login cancelled" in hall.counter.log()
    hall.keys["counter-W2"].advance(1.05)  # past the call lockout of the login's Enter
    hall.keys["counter-W2"].tap("KEY_KPENTER")  # a plain call again
    led.wait_for(lambda t: "B001" in t)


def test_a_wrong_pin_is_refused(hall: Hall) -> None:
    led = hall.leds[1]
    hall.login("counter-W1", "1", "9999")
    led.wait_for(lambda t: t == "工号或密码错误")
    led.wait_for(lambda t: t == "1号窗口", timeout=5)  # nobody logged in
    assert "wrong staff number or PIN" in hall.hall.log()
    hall.login("counter-W1", "77", "1111")  # a staff number nobody has: the same notice
    led.wait_for(lambda t: t == "工号或密码错误")
    assert _events(hall, "terminal.login") == []


def test_forged_logins_are_forbidden(hall: Hall) -> None:
    """What a counter (or whoever holds its broker password) may not do by naming staff."""
    counter = Device(hall.broker.url, "counter-W2")
    forged = [
        {"staff": "S001"},  # a bare staff number
        {"staff": "S001", "pin": "2222"},  # another clerk's PIN
        {"card": "04A10001"},  # the raw card UID instead of its proof
        {"card": card_proof(b"not the site secret at all", "04A10001")},
    ]
    for proof in forged:
        assert counter.request("login", **proof)["error"]["code"] == "forbidden", proof
    assert counter.request("login", staff="S404", pin="1111")["error"]["code"] == "unknown_staff"
    assert _events(hall, "terminal.login") == []
    answer = counter.request("login", card=card_proof(SECRET, "04A10001"))
    assert answer["staff"] == {"id": "S001", "name": "李敏"}
    counter.close()


def test_the_led_is_sent_nothing_before_the_window_state(hall: Hall) -> None:
    """No blank SHOW at start-up before the retained window state has arrived (the LED
    flickered blank): the first frame is the window's text."""
    hall.leds[2].wait_for(lambda t: t == "2号窗口")  # the fixture waited for window 1's only
    for window in (1, 2):
        texts = [s.text for s in hall.leds[window].history]
        assert texts and texts[0] == f"{window}号窗口", texts
    hall.counter.kill()
    shown = {w: len(led.history) for w, led in hall.leds.items()}
    # On a broker that has no window state (as before the retained state arrives), the
    # counter's LEDs are pinged (display health) but shown nothing: they keep their text.
    with Mosquitto(workdir=hall.tmp / "empty-broker") as empty:
        alone = counter_daemon(empty, hall.site, hall.tmp / "alone").start()
        wait_until(lambda: alone.log().count("display ok") >= 2, what="both LEDs answering")
        # Nothing to wait for: what must not come is a frame. A second of the counter
        # running on its own gives a wrong one time to show.
        time.sleep(1.0)
        assert alone.stop() == 0
    assert {w: len(led.history) for w, led in hall.leds.items()} == shown
    assert hall.leds[1].text == "1号窗口"
    hall.counter.start()
    for window, led in hall.leds.items():
        wait_until(lambda led=led, w=window: len(led.history) > shown[w], what="a new frame")
        texts = [s.text for s in led.history[shown[window] :]]
        assert texts[0] == f"{window}号窗口", texts

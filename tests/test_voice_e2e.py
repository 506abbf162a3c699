"""Voice calling with real parts: espeak-ng and sox render, a real Mosquitto and hall,
counters that call, and `quhao voice` as a process. Every WAV is measured with sox."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quhao.broker import Mosquitto
from quhao.config import load
from quhao.mqtt import Bus
from quhao.topics import Topics
from screens.voice.announcer import Announcer
from screens.voice.engine import chime
from tests.helpers import SITE, SITE_ID, Daemon, Device, hall_daemon, wait_until

T = Topics(SITE_ID)
RMS_FLOOR = 0.01  # espeak-ng speech measures ~0.08; digital silence 0.0


def voice_site(folder: Path, voice: str) -> Path:
    """The tests' small hall with a [voice] table."""
    text = SITE.read_text().replace(
        'secret_file = "test.secret"', f'secret_file = "{SITE.parent / "test.secret"}"'
    )
    site = folder / "site.toml"
    folder.mkdir(parents=True, exist_ok=True)
    site.write_text(f"{text}\n[voice]\n{voice}\n")
    return site


def duration(wav: Path) -> float:
    out = subprocess.run(["sox", "--i", "-D", str(wav)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def rms(wav: Path) -> float:
    out = subprocess.run(
        ["sox", str(wav), "-n", "stat"], capture_output=True, text=True, check=True
    )
    match = re.search(r"RMS\s+amplitude:\s+([0-9.]+)", out.stderr)
    assert match, out.stderr
    return float(match.group(1))


def records(folder: Path) -> list[dict[str, Any]]:
    log = folder / "announcements.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_records(folder: Path, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    return list(
        wait_until(
            lambda: (found := records(folder)) and len(found) >= count and found,
            timeout,
            f"{count} announcements in {folder}",
        )
    )


# ---- quhao voice, a real hall, real calls -------------------------------------------


class Hall:
    def __init__(self, broker: Mosquitto, voice: Daemon, out: Path) -> None:
        self.broker, self.voice, self.out = broker, voice, out
        self.devices: dict[str, Device] = {}
        self.people = 0

    def device(self, name: str) -> Device:
        if name not in self.devices:
            self.devices[name] = Device(self.broker.url, name)
        return self.devices[name]

    def issue(self, service: str) -> str:
        self.people += 1  # social needs an ID card: a new person each time (its quota)
        person = {"key": f"{self.people:064x}", "age": 40} if service == "social" else None
        answer = self.device("kiosk-K1").request("issue", service=service, person=person)
        assert answer["ok"], answer
        return str(answer["ticket"]["number"])


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hall]:
    work = tmp_path_factory.mktemp("voice-hall")
    out = work / "announcements"
    site = voice_site(work / "site", 'mode = "speech"\nrepeats = 2\nengine = "espeak"')
    with Mosquitto(workdir=work / "broker") as broker:
        hall = hall_daemon(broker.url, work / "hall").launch()
        voice = Daemon(
            [
                "voice",
                "--config",
                str(site),
                "--broker",
                broker.url,
                "--out",
                str(out),
                "--state-dir",
                str(work / "voice-state"),
                "--log-level",
                "DEBUG",
            ],
            work / "voice.log",
            "voice announcer ready",
        ).launch()
        hall.wait_ready()
        voice.wait_ready()
        running = Hall(broker, voice, out)
        try:
            yield running
        finally:
            for device in running.devices.values():
                device.close()
            voice.stop()
            hall.stop()


def test_a_call_is_announced_with_its_number_read_digit_by_digit(hall: Hall) -> None:
    before = len(records(hall.out))
    number = hall.issue("enquiry")
    assert hall.device("counter-W2").request("call")["ticket"]["number"] == number
    said = wait_records(hall.out, before + 1)[before]
    digits = "".join("零一二三四五六七八九"[int(d)] for d in number[1:])
    assert said["text"] == f"请 K {digits} 号 到 二 号窗口 办理"
    assert "零零" in said["text"] and not re.search(r"[0-9]", said["text"])
    assert said["mode"] == "speech" and said["repeats"] == 2 and said["ok"]
    wav = hall.out / said["file"]
    assert duration(wav) > 1.0 + chime().seconds
    assert rms(wav) > RMS_FLOOR


def test_two_calls_50_ms_apart_give_two_announcements_in_order(hall: Hall) -> None:
    before = len(records(hall.out))
    first, second = hall.issue("social"), hall.issue("enquiry")
    hall.device("counter-W1").request("call")
    time.sleep(0.05)  # the stimulus: a second window calls 50 ms later
    hall.device("counter-W2").request("call")
    said = wait_records(hall.out, before + 2)[before:]
    assert [(s["number"], s["window"]) for s in said] == [(first, 1), (second, 2)]
    assert [s["seq"] for s in said] == sorted(s["seq"] for s in said)
    # one at a time: the second started only after the first had finished
    assert said[1]["started"] >= said[0]["finished"]
    files = sorted(p.name for p in hall.out.glob("*.wav"))
    assert [s["file"] for s in said] == files[-2:]


def test_a_recall_is_announced_again(hall: Hall) -> None:
    before = len(records(hall.out))
    number = hall.issue("enquiry")
    counter = hall.device("counter-W2")
    assert counter.request("call")["ticket"]["number"] == number
    counter.request("recall")
    said = wait_records(hall.out, before + 2)[before:]
    assert [s["recall"] for s in said] == [False, True]
    assert "再次" in said[1]["text"] and said[1]["number"] == number


def test_a_garbage_event_is_logged_and_skipped(hall: Hall) -> None:
    bus = Bus(hall.broker.url, "test-garbage")
    bus.start()
    try:
        for payload in (
            b"not json",
            b'{"type": "ticket.called", "ticket": 5}',
            json.dumps(
                {
                    "type": "ticket.called",
                    "ticket": "x/A1",
                    "number": "A1; rm -rf /",
                    "window": 1,
                    "terminal": "t",
                    "staff": None,
                    "ordinary_waiting": True,
                    "at": 1.0,
                }
            ).encode(),
            b"[" * 10_000,
        ):
            bus.publish(T.event("ticket.called"), payload, qos=1).wait_for_publish(5)
    finally:
        bus.stop()
    wait_until(
        lambda: hall.voice.log().count("event skipped") >= 4, 10, "four skipped events logged"
    )
    assert hall.voice.alive
    # and the next real call is still announced
    test_a_call_is_announced_with_its_number_read_digit_by_digit(hall)


# ---- the announcer in this process: modes, engines, render times --------------------


def announcer(
    tmp_path: Path, voice: str, wav: bool = True
) -> tuple[Announcer, Path, Callable[[], None]]:
    """An Announcer writing WAVs, its owner a thread that runs what the worker posts."""
    config = load(voice_site(tmp_path / "site", voice))
    inbox: list[Callable[[], None]] = []
    wake = threading.Condition()

    def post(action: Callable[[], None]) -> None:
        with wake:
            inbox.append(action)
            wake.notify()

    out = tmp_path / "out"
    unit = Announcer(config, out if wav else None, post=post, work_dir=tmp_path / "work")
    unit.start()

    def run_posted() -> None:  # the owner's turn: what the worker posted, in order
        with wake:
            wake.wait_for(lambda: bool(inbox), timeout=0.1)
            actions, inbox[:] = list(inbox), []
        for action in actions:
            action()

    return unit, out, run_posted


def call_event(number: str, window: int, at: float = 1795395700.0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "ticket.called",
        "ticket": f"2026-11-23/{number}",
        "number": number,
        "service": "social",
        "window": window,
        "terminal": f"counter-W{window}",
        "staff": None,
        "ordinary_waiting": True,
        "at": at,
        **extra,
    }


def drain(
    unit: Announcer, run_posted: Callable[[], None], out: Path, count: int
) -> list[dict[str, Any]]:
    """Be the owner until `count` announcements are made and none waits."""
    deadline = time.monotonic() + 20
    while unit.queue.backlog or len(records(out)) < count:
        assert time.monotonic() < deadline, f"{count} announcements not made in 20 s"
        run_posted()  # waits for the worker's next post
    return records(out)


def test_chime_mode_writes_the_chime_alone(tmp_path: Path) -> None:
    unit, out, run_posted = announcer(tmp_path, 'mode = "chime"')
    try:
        unit.on_event(call_event("A001", 1))
        [said] = drain(unit, run_posted, out, 1)
    finally:
        unit.stop()
    assert said["mode"] == "chime" and said["text"] is None and said["engine"] is None
    wav = out / said["file"]
    assert abs(duration(wav) - chime().seconds) < 0.01  # no speech after it
    assert rms(wav) > RMS_FLOOR


def test_silent_mode_and_quiet_services_say_nothing_but_log_it(tmp_path: Path) -> None:
    unit, out, run_posted = announcer(
        tmp_path, 'mode = "speech"\nservices = { tax = "silent", enquiry = "chime" }'
    )
    try:
        unit.on_event(call_event("B001", 1, service="tax"))
        unit.on_event(call_event("K001", 2, service="enquiry"))
        said = drain(unit, run_posted, out, 2)
    finally:
        unit.stop()
    assert (said[0]["number"], said[0]["mode"], said[0]["file"]) == ("B001", "silent", None)
    assert said[1]["mode"] == "chime" and abs(duration(out / said[1]["file"]) - 1.4) < 0.01
    assert sorted(p.name for p in out.glob("*.wav")) == [said[1]["file"]]


def test_quiet_hours_turn_speech_into_the_chime(tmp_path: Path) -> None:
    unit, out, run_posted = announcer(tmp_path, 'quiet_hours = ["12:00-13:30"]')
    noon = 1795406400.0  # 2026-11-23 12:00 in Asia/Shanghai
    try:
        unit.on_event(call_event("A001", 1, at=noon + 60))
        unit.on_event(call_event("A002", 1, at=noon + 2 * 3600))
        said = drain(unit, run_posted, out, 2)
    finally:
        unit.stop()
    assert [s["mode"] for s in said] == ["chime", "speech"]


def test_recorded_clips_speak_the_same_text(tmp_path: Path) -> None:
    unit, out, run_posted = announcer(tmp_path, 'engine = "clips"\nrepeats = 1')
    try:
        unit.on_event(call_event("A001", 41))
        [said] = drain(unit, run_posted, out, 1)
    finally:
        unit.stop()
    assert said["engine"] == "clips" and said["text"] == "请 A 零零一 号 到 四十一 号窗口 办理"
    wav = out / said["file"]
    assert duration(wav) > 1.0 + chime().seconds and rms(wav) > RMS_FLOOR
    assert (tmp_path / "work" / "voice-clips-cmn-latn-pinyin-150" / "零.wav").exists()


def test_the_sound_card_player_gets_the_whole_announcement(tmp_path: Path) -> None:
    """output = "device" pipes each WAV to the player command and waits for it; here the
    "sound card" is sox writing what it was given to a file."""
    played = tmp_path / "played.wav"
    unit, _, run_posted = announcer(
        tmp_path, f'output = "device"\nplayer = "sox -q -t wav - {played}"\nrepeats = 1', wav=False
    )
    try:
        unit.on_event(call_event("A001", 5))
        log = tmp_path / "work" / "announcements.jsonl"

        def settled() -> bool:
            run_posted()
            return unit.queue.backlog == 0 and log.exists()

        wait_until(settled, 20, "the announcement played")
    finally:
        unit.stop()
    [said] = [json.loads(line) for line in log.read_text().splitlines()]
    assert (
        said["ok"] and said["file"] is None and said["text"] == "请 A 零零一 号 到 五 号窗口 办理"
    )
    assert abs(duration(played) - said["seconds"]) < 0.01 and rms(played) > RMS_FLOOR


def test_a_flood_of_garbage_and_calls_loses_no_call(tmp_path: Path) -> None:
    """5,000 unreadable events among 300 calls: every call announced, in order."""
    unit, out, run_posted = announcer(tmp_path, 'mode = "chime"')
    garbage = [b"{", b"[]", b'{"type": "ticket.called"}', json.dumps(call_event("A 1", 1)).encode()]
    try:
        for i in range(5000):
            unit.on_event(garbage[i % len(garbage)])
            if i % 16 == 0:
                unit.on_event(call_event(f"A{i // 16:03d}", i % 41 + 1, at=1795395700.0 + i))
        said = drain(unit, run_posted, out, 313)
    finally:
        unit.stop()
    assert unit.skipped == 5000
    assert [s["number"] for s in said] == [f"A{i:03d}" for i in range(313)]
    assert len(list(out.glob("*.wav"))) == 313

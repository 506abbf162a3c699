"""Bad-rating follow-up cases through real parts: Mosquitto, the hall, a counter daemon
with its rating pad on a FIFO, the `quhao cases` commands; deadlines by the hall clock.

The hall runs on Friday 2026-11-27 with Monday 11-30 a holiday and 2 working days to
follow up: a bad rating that Friday is due at the end of Wednesday 12-02 (Thursday
00:00), reminded 24 hours before. The hall is restarted at later hall times to see the
reminder and the overdue alert fire once each, by its own housekeeping.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hall.cases import deadline_day, due_at, is_working_day
from quhao.broker import Mosquitto
from quhao.config.loops import Cases
from quhao.topics import Topics
from simulators.keys import KeypadFeeder
from simulators.led import LedSimulator
from tests.helpers import ROOT, SITE, SITE_ID, Daemon, Device, Recorder, hall_daemon, wait_until

T = Topics(SITE_ID)
TZ = ZoneInfo("Asia/Shanghai")
FRIDAY = "2026-11-27T09:00:00+08:00"
DUE = datetime(2026, 12, 3, tzinfo=TZ).timestamp()  # end of Wednesday 12-02
CASE = "C20261127-B001"


def cases_site(tmp: Path) -> Path:
    text = SITE.read_text()
    text = text[: text.index("[[counters]]")]
    text = text.replace("[queue]", "[queue]\nrating_timeout_s = 5")
    # a counter's (and so the office's) real default rate: the flood test meets it
    text = text.replace(
        "counter = { per_s = 1000, burst = 1000 }", "counter = { per_s = 5, burst = 20 }"
    )
    text = text.replace(
        'supervisors = ["S002"]',
        'supervisors = ["S002"]\ndeadline_working_days = 2\nremind_before_hours = 24\n'
        "holidays = [2026-11-30]",
    )
    text += (
        '\n[[counters]]\nname = "counter-W2"\nwindow = 2\n'
        f'keypad = "events://{tmp}/keys.fifo"\nrating = "events://{tmp}/rate.fifo"\n'
        f'display = "serial://{tmp}/led-2?addr=2&baud=9600"\n'
    )
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
    led: LedSimulator
    keys: KeypadFeeder
    pad: KeypadFeeder

    def restart(self, clock: str) -> None:
        self.hall.stop()
        self.hall = hall_daemon(self.broker.url, self.tmp / "hall", self.site, clock).start()

    def cases(self, *args: str, pin: str = "") -> subprocess.CompletedProcess[str]:
        where = ["--config", str(self.site)]
        if args[0] in ("list", "show"):
            where += ["--state-dir", str(self.tmp / "hall")]
        else:
            where += ["--broker", self.broker.url]
        return subprocess.run(
            [sys.executable, "-m", "cli", "cases", *args, *where],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "QUHAO_PIN": pin},
            timeout=60,
        )

    def events(self, kind: str) -> list[dict]:
        db = sqlite3.connect(self.tmp / "hall" / "hall.sqlite")
        rows = db.execute("SELECT data FROM events WHERE type = ? ORDER BY seq", (kind,))
        found = [json.loads(r[0]) for r in rows]
        db.close()
        return found


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hall]:
    tmp = tmp_path_factory.mktemp("cases")
    site = cases_site(tmp)
    with Mosquitto(workdir=tmp / "broker") as broker:
        led = LedSimulator(tmp / "led-2", 2, tmp / "snapshots").start()
        keys, pad = KeypadFeeder(tmp / "keys.fifo"), KeypadFeeder(tmp / "rate.fifo")
        hall_proc = hall_daemon(broker.url, tmp / "hall", config=site, clock=FRIDAY).launch()
        counter = Daemon(
            ["counter", "--config", str(site), "--broker", broker.url, "--device", "counter-W2"],
            tmp / "counter.log",
            "counter serving",
        ).launch()
        hall_proc.wait_ready()
        counter.wait_ready()
        running = Hall(tmp, broker, site, hall_proc, led, keys, pad)
        yield running
        counter.stop()
        running.hall.stop()
        led.close()
        keys.close()
        pad.close()


@pytest.mark.long
def test_a_bad_rating_on_the_pad_opens_a_case_followed_up_by_the_hall_clock(hall: Hall) -> None:
    recorder = Recorder(hall.broker.url, "quhao/testhall/event/#", client_id="cases")
    kiosk = Device(hall.broker.url, "kiosk-K1")
    assert kiosk.request("issue", service="tax", person={"key": "ab" * 32})["ok"]
    hall.led.wait_for(lambda t: t == "2号窗口")
    hall.keys.type("KEY_KP1", "KEY_KPENTER")  # staff 1 (S001), then the PIN
    hall.led.wait_for(lambda t: t == "请输入密码")
    hall.keys.type("KEY_KP1", "KEY_KP1", "KEY_KP1", "KEY_KP1", "KEY_KPENTER")
    hall.led.wait_for(lambda t: "李敏" in t)
    hall.keys.advance(1.05)
    hall.keys.tap("KEY_KPENTER")  # call
    hall.led.wait_for(lambda t: "B001" in t)
    hall.keys.tap("KEY_KPDOT")  # finish: the pad is armed
    hall.led.wait_for(lambda t: "李敏" in t)
    hall.pad.type("KEY_4", "KEY_1")  # 不满意, reason 1
    opened = recorder.wait_for(T.event("case.opened"))
    assert opened["case"] == CASE and opened["level"] == 2 and opened["staff"] == "S001"
    assert opened["due"] == DUE and opened["remind_at"] == DUE - 86400
    assert opened["window"] == 2 and "person_key" not in opened

    # 一次一评: the same ticket rated again, on the pad's counter or the window's screen
    for name in ("counter-W2", "rater-W2"):
        again = Device(hall.broker.url, name)
        answer = again.request("rate", ticket="B001", level=5)
        assert answer["ok"] and answer["changed"] is False
        again.close()
    assert len(hall.events("ticket.rated")) == 1 and len(hall.events("case.opened")) == 1

    # the office: a supervisor records the call-back; the clerk appeals; the clerk may not
    # decide on their own appeal, the supervisor upholds it
    done = hall.cases(
        "update", CASE, "contacted", "--note", "电话回访，已致歉", "--staff", "S002", pin="2222"
    )
    assert done.returncode == 0 and "contacted" in done.stdout, done.stderr
    wrong = hall.cases("update", CASE, "resolved", "--note", "x", "--staff", "S002", pin="0000")
    assert wrong.returncode == 1 and "forbidden" in wrong.stderr
    assert (
        hall.cases(
            "appeal", CASE, "--note", "已一次性告知", "--staff", "S001", pin="1111"
        ).returncode
        == 0
    )
    own = hall.cases("decide", CASE, "upheld", "--note", "x", "--staff", "S001", pin="1111")
    assert own.returncode == 1 and "forbidden" in own.stderr
    upheld = hall.cases(
        "decide", CASE, "upheld", "--note", "经核查属实", "--staff", "S002", pin="2222"
    )
    assert upheld.returncode == 0 and "appeal upheld" in upheld.stdout, upheld.stderr
    assert [e["type"] for e in recorder.payloads(T.event("case.decided"))] == ["case.decided"]

    # Tuesday (after the holiday): nothing is due yet
    hall.restart("2026-12-01T12:00:00+08:00")
    # Wednesday 00:00:30: the reminder, once, from the hall's housekeeping
    hall.restart("2026-12-02T00:00:30+08:00")
    wait_until(lambda: hall.events("alert.case_due"), what="alert.case_due")
    assert hall.events("alert.case_overdue") == []
    # Thursday: overdue, once; the reminder is not repeated after the restart
    hall.restart("2026-12-03T00:01:00+08:00")
    wait_until(lambda: hall.events("alert.case_overdue"), what="alert.case_overdue")
    hall.restart("2026-12-03T00:02:00+08:00")
    hall.hall.wait_ready()
    kiosk.close()
    assert len(hall.events("alert.case_due")) == 1 and len(hall.events("alert.case_overdue")) == 1
    assert hall.events("alert.case_due")[0]["due"] == DUE

    listed = hall.cases("list", "--from", "2026-11-01", "--to", "2026-12-31")
    assert CASE in listed.stdout and "overdue" in listed.stdout, listed.stdout
    shown = hall.cases("show", CASE)
    assert shown.returncode == 0, shown.stderr
    for text in (
        "contacted by S002: 电话回访，已致歉",
        "appealed by S001",
        "upheld by S002",
        "reminded",
        "overdue",
        "appeal upheld",
    ):
        assert text in shown.stdout, shown.stdout
    # resolved late: the state says so, and nothing more fires
    late = hall.cases(
        "update", CASE, "resolved", "--note", "整改完成", "--staff", "S002", pin="2222"
    )
    assert late.returncode == 0, late.stderr
    assert "late" in hall.cases("show", CASE).stdout
    recorder.close()


def test_the_office_actions_refuse_wrong_identity_malformed_input_and_floods(hall: Hall) -> None:
    office, kiosk = Device(hall.broker.url, "office"), Device(hall.broker.url, "kiosk-K2")
    proof = {"staff": "S002", "pin": "2222"}
    valid = {"case": CASE, "state": "contacted", "note": "回访", "by": proof}
    assert kiosk.request("case_update", **valid)["error"]["code"] == "forbidden"
    assert office.request("issue", service="social")["error"]["code"] == "forbidden"
    bad = {
        "unknown_case": {**valid, "case": "C20990101-A001"},
        "forbidden": {**valid, "by": {"staff": "S002"}},
        "bad_request": {**valid, "state": "open"},
    }
    for code, payload in bad.items():
        assert office.request("case_update", **payload)["error"]["code"] == code
    assert office.request("case_update", **{**valid, "note": ""})["error"]["code"] == (
        "bad_request"
    )
    # a flood: 60 requests at once, past a counter's burst of 20, answered rate_limited
    replies = Recorder(hall.broker.url, T.reply("office"), client_id="office-replies")
    flood = {**valid, "by": {"staff": "S404", "pin": "1"}}
    for n in range(60):
        office.bus.publish(T.request("office", "case_update"), {**flood, "rid": f"flood-{n}"})
    wait_until(lambda: len(replies.payloads(T.reply("office"))) >= 60, what="60 answers")
    codes = {p["error"]["code"] for p in replies.payloads(T.reply("office"))}
    assert codes == {"rate_limited", "forbidden"}
    replies.close()
    assert hall.hall.alive
    office.close()
    kiosk.close()


# ---- the deadline calculus (pure) -------------------------------------------

days = st.dates(date(2025, 1, 1), date(2030, 12, 31))


@given(
    rated=days,
    n=st.integers(1, 15),
    holidays=st.lists(days, max_size=20),
    workdays=st.lists(days, max_size=5),
)
def test_the_deadline_is_the_nth_working_day_after_the_rating(
    rated: date, n: int, holidays: list[date], workdays: list[date]
) -> None:
    rules = Cases(deadline_working_days=n, holidays=tuple(holidays), workdays=tuple(workdays))
    due = deadline_day(rated, rules)
    assert is_working_day(due, rules)
    between = [rated + timedelta(days=k) for k in range(1, (due - rated).days + 1)]
    assert sum(is_working_day(d, rules) for d in between) == n
    assert all(d in workdays or d not in holidays for d in between if is_working_day(d, rules))
    at = datetime.combine(rated, datetime.min.time(), TZ).timestamp() + 3600 * 15
    end = due_at(at, TZ, rules)
    assert datetime.fromtimestamp(end, TZ) == datetime.combine(
        due + timedelta(days=1), datetime.min.time(), TZ
    )

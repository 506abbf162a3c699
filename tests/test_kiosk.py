"""The kiosk through real parts: pcscd + vpcd, a SAM pty, a TCP ESC/POS printer, the hall."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from kiosk.entry import Cleared, GreenChosen, IdEntry, NumberTyped, StaffStep, StaffTyped
from kiosk.flow import Issue, KioskFlow, StaffProof
from kiosk.person import Person, from_number
from quhao import ticketpage
from quhao.broker import Mosquitto, free_port
from quhao.config import KioskKeys, load
from quhao.devices.inputevent import KeyEvent
from quhao.idnumber import with_check
from quhao.staffauth import card_proof
from quhao.topics import Topics
from simulators.idcard import PcscStack, VirtualIdCard
from simulators.keys import KeypadFeeder
from simulators.printer import PrinterSimulator
from simulators.sam import CardHolder, SamSimulator
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
ELDER = CardHolder("王老伯", with_check("44011119480315123"), date(1948, 3, 15))
ADULT = CardHolder("李小明", with_check("44010619900101234"), date(1990, 1, 1), gender="1")
CITIZEN_UID = "1122334455667788"
STAFF_UID = "04A10001"  # S001, may override, PIN 1111 (tests/sites/small.toml)
CLERK_UID = "04A10002"  # S002, may not override, PIN 2222
TYPED = with_check("44010619850505321")
CITIZEN_READER = "Virtual PCD 00 00"  # kiosk-K1's PC/SC reader, vpcd slot 0
FIND = (0x20, 0x01)  # GA 467 find card: the kiosk asks the SAM reader every 50 ms
SECRET = (SITE.parent / "test.secret").read_bytes().strip()


def kiosk_site(tmp: Path, printer_port: int, extra: str = "") -> Path:
    """The small test hall with kiosk-K1 on the simulators under tmp; `extra`: more TOML."""
    text = SITE.read_text()
    head, tail = text.split('[[kiosks]]\nname = "kiosk-K1"\n', 1)
    kiosk = (
        '[[kiosks]]\nname = "kiosk-K1"\n'
        'readers = ["pcsc://?reader=Virtual%20PCD%2000%2000", '
        f'"serial://{tmp}/sam-K1?baud=115200"]\n'
        f'keypad = "events://{tmp}/keys-K1.fifo"\n'
        f'printer = "tcp://127.0.0.1:{printer_port}"\n'
        # Shorter than the default 500 ms: a card taken off counts as gone after a few of
        # the SAM reader's polls or one of pcscd's, and the tests wait on those, not on a
        # clock. (The rule at its default is tested in tests/test_card_presence.py.)
        "card_absent_ms = 100\n"
    )
    site = tmp / "site.toml"
    site.write_text(head + kiosk + tail + extra)
    (tmp / "test.secret").write_text((SITE.parent / "test.secret").read_text())
    return site


@dataclass
class Hall:
    tmp: Path
    broker: Mosquitto
    hall: Daemon
    kiosk: Daemon
    printer: PrinterSimulator
    sam: SamSimulator
    card: VirtualIdCard
    keys: KeypadFeeder
    recorder: Recorder

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.tmp / "hall" / "hall.sqlite")

    def tickets(self) -> list[tuple]:
        with self.db() as db:
            return db.execute(
                "SELECT number, status, priority, override_staff FROM tickets ORDER BY issued_at"
            ).fetchall()

    def swipe(self, holder: CardHolder) -> None:
        """A card put on the SAM reader and taken off again: one presentation."""
        self.sam.present(holder)
        wait_until(lambda: self.sam.commands.count((0x30, 0x01)) > self._reads, what="SAM read")
        self._reads = self.sam.commands.count((0x30, 0x01))
        self.sam.remove()
        # Off for longer than card_absent_ms (100 ms): the kiosk has heard "no card" from
        # three finds at least 50 ms apart once it sends the fourth. A new presentation next.
        finds = self.sam.commands.count(FIND)
        wait_until(lambda: self.sam.commands.count(FIND) >= finds + 4, what="the card gone")

    _reads = 0

    def status(self) -> dict:
        return self.recorder.last(T.status("kiosk-K1")) or {}

    def said(self, message: str, timeout: float = 10.0) -> None:
        """Wait until the kiosk's screen has said this (it may have moved on since)."""
        self.recorder.wait_for(T.status("kiosk-K1"), lambda p: p.get("message") == message, timeout)

    def type_id(self, number: str, service_key: str = "KEY_F1") -> None:
        self.keys.type(service_key, *[f"KEY_{c}" for c in number], "KEY_ENTER")

    def staff_pin(self, number: str, pin: str) -> None:
        """The staff key, the staff number, Enter, the PIN, Enter."""
        self.keys.type("KEY_S", *[f"KEY_{c}" for c in number], "KEY_ENTER")
        self.said("工作人员授权：请输入密码，按确认键")
        self.keys.type(*[f"KEY_{c}" for c in pin], "KEY_ENTER")

    def fill_quota(self, number: str = TYPED) -> None:
        """Two tickets for 社保业务, then the third is refused (a slip)."""
        start = len(self.printer.wait_for_tickets(0))
        for n in (1, 2, 3):
            self.type_id(number)
            printed = self.printer.wait_for_tickets(start + n)
        assert "额满再取须咨询工作人员" in printed[-1].text
        self.said("该证件本项业务取号已达上限")

    def requests(self, action: str = "issue") -> list[dict]:
        return self.recorder.payloads(T.request("kiosk-K1", action))


@pytest.fixture
def hall(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path: Path, pcsc: PcscStack
) -> Iterator[Hall]:
    """The hall and kiosk-K1 on its simulators; parametrized (indirect): more site TOML.

    Everything started is stopped even when the set-up fails half way (an ExitStack),
    so a failed start leaves no hall or kiosk running."""
    with ExitStack() as started:
        printer = PrinterSimulator(tmp_path / "tickets", port=free_port()).start()
        started.callback(printer.close)
        site = kiosk_site(tmp_path, printer.port, getattr(request, "param", ""))
        sam = SamSimulator(tmp_path / "sam-K1").start()
        started.callback(sam.close)
        keys = KeypadFeeder(tmp_path / "keys-K1.fifo")
        started.callback(keys.close)
        card = VirtualIdCard(pcsc.port)
        started.callback(card.remove)
        recorder = Recorder(broker.url, "quhao/#", client_id="kiosk-test-recorder")
        started.callback(recorder.close)
        hall_proc = hall_daemon(broker.url, tmp_path / "hall", config=site).launch()
        started.callback(hall_proc.stop)
        kiosk = Daemon(
            [
                "kiosk",
                "--config",
                str(site),
                "--broker",
                broker.url,
                "--device",
                "kiosk-K1",
                "--state-dir",
                str(tmp_path / "kiosk"),
                "--log-level",
                "DEBUG",
            ],
            tmp_path / "kiosk.log",
            "kiosk kiosk-K1 serving",
        ).launch()  # side by side with the hall
        started.callback(kiosk.stop)
        hall_proc.wait_ready()
        kiosk.wait_ready()
        running = Hall(tmp_path, broker, hall_proc, kiosk, printer, sam, card, keys, recorder)
        wait_until(lambda: running.status().get("state") == "in_service", what="kiosk in service")
        wait_until(lambda: "SAM reader ok" in kiosk.log(), what="SAM reader ready")
        yield running
        card.remove()
        assert kiosk.stop() == 0, kiosk.log()


def test_the_printer_is_asked_while_the_card_is_read(hall: Hall) -> None:
    """A card noticed readies the printer: the ticket's status query goes out while the
    SAM still sends the card's data (a base message takes 112 ms at 115200 baud), so its
    answer is in when the card is, and the ticket is the same."""
    hall.sam.line_baud = 115200
    hall.keys.tap("KEY_F1")
    hall.swipe(ADULT)
    ticket = hall.printer.wait_for_tickets(1)[0]
    assert "A001" in ticket.text
    selected, read = hall.sam.selected_at, hall.sam.read_answered_at
    assert read - selected > 0.1
    assert any(selected <= asked < read - 0.05 for asked in hall.printer.interpreter.status_asked)


@pytest.mark.parametrize(
    "hall", ['[screens]\npublic_url = "http://hall.local:8080/"\n'], indirect=True, ids=["phone"]
)
def test_the_ticket_qr_opens_the_citizens_phone_page(hall: Hall) -> None:
    hall.type_id(TYPED)
    ticket = hall.printer.wait_for_tickets(1)[0]
    with hall.db() as db:
        ticket_id = db.execute("SELECT id FROM tickets").fetchone()[0]
    key = ticketpage.page_key(load(hall.tmp / "site.toml").read_secret())
    page = f"http://hall.local:8080/t/{ticket_id}/{ticketpage.token(key, SITE_ID, ticket_id)}"
    assert ticket.qr_codes == [page]


def test_vpcd_card_to_printed_ticket(hall: Hall) -> None:
    wait_until(lambda: "Virtual PCD" in hall.kiosk.log(), what="PC/SC reader found")
    hall.keys.tap("KEY_F1")  # 社保业务
    hall.card.insert(CITIZEN_UID)
    ticket = hall.printer.wait_for_tickets(1)[0]
    assert "A001" in ticket.text and "社保业务" in ticket.text and "测试政务服务中心" in ticket.text
    with hall.db() as db:
        ticket_id = db.execute("SELECT id FROM tickets").fetchone()[0]
    assert ticket.qr_codes == [f"quhao:{SITE_ID}:{ticket_id}"]
    assert ticket.cut_at > 0
    number_line = next(line for line in ticket.lines if line.text == "A001")
    assert number_line.width == 3 and number_line.align == 1  # large and centred
    assert (hall.tmp / "tickets" / "ticket-0001.png").stat().st_size > 1000
    # the card stays on the reader: no second ticket
    hall.keys.tap("KEY_F1")
    time.sleep(1.0)  # nothing to wait for but pcscd's polls (400 ms): two pass, no read
    assert len(hall.printer.tickets) == 1 and len(hall.tickets()) == 1
    # taken off and put on again: a second presentation, a second ticket
    hall.card.remove()
    wait_for_reader(CITIZEN_READER, card=False)  # gone for longer than card_absent_ms next
    hall.card.insert(CITIZEN_UID)
    hall.printer.wait_for_tickets(2)
    assert [t[0] for t in hall.tickets()] == ["A001", "A002"]


def test_sam_elderly_priority_quota_slip_and_staff_override(hall: Hall) -> None:
    hall.keys.tap("KEY_F1")
    hall.swipe(ELDER)
    first = hall.printer.wait_for_tickets(1)[0]
    assert "老年人优先" in first.text and "440111********" in first.text
    assert hall.tickets()[0][2] == "elderly"

    hall.keys.tap("KEY_F1")
    hall.swipe(ELDER)
    hall.printer.wait_for_tickets(2)
    hall.keys.tap("KEY_F1")
    hall.swipe(ELDER)  # a third ticket for the same service within two hours
    slip = hall.printer.wait_for_tickets(3)[2]
    assert "额满再取须咨询工作人员" in slip.text and not slip.qr_codes
    assert len(hall.tickets()) == 2
    hall.recorder.wait_for(T.event("ticket.refused"), lambda p: p["reason"] == "quota_exceeded")

    hall.card.insert(STAFF_UID)  # staff S001 authorises one more
    wait_until(lambda: "authorised one ticket" in hall.kiosk.log(), what="override armed")
    hall.said("工作人员已授权，请刷市民身份证（绿色通道请按绿色通道键）")
    hall.card.remove()
    hall.keys.tap("KEY_F1")
    hall.swipe(ELDER)
    hall.printer.wait_for_tickets(4)
    assert hall.tickets()[2][3] == "S001"
    # The kiosk proved the card with the site secret; the card's UID never left it.
    assert hall.requests()[-1]["override"] == {"card": card_proof(SECRET, STAFF_UID)}
    mqtt = b"\n".join(m.payload for m in hall.recorder.messages)
    assert STAFF_UID.encode() not in mqtt and STAFF_UID.lower().encode() not in mqtt
    assert STAFF_UID not in hall.kiosk.log()


def test_override_by_staff_number_and_pin_on_the_keypad(hall: Hall) -> None:
    hall.fill_quota()
    hall.keys.tap("KEY_S")
    hall.said("工作人员授权：请输入工号，按确认键")
    hall.staff_pin("001", "1111")  # 001 (or 1) is S001
    hall.said("工作人员已授权，请刷市民身份证（绿色通道请按绿色通道键）")
    hall.type_id(TYPED)
    ticket = hall.printer.wait_for_tickets(4)[-1]
    assert "A003" in ticket.text
    assert [t[3] for t in hall.tickets()] == [None, None, "S001"]
    assert hall.requests()[-1]["override"] == {"staff": "S001", "pin": "1111"}
    hall.recorder.wait_for(T.event("ticket.issued"), lambda p: p["override_staff"] == "S001")
    # one ticket only: the next is over the quota again
    hall.type_id(TYPED)
    hall.printer.wait_for_tickets(5)
    assert len(hall.tickets()) == 3
    # the PIN is in no log line and on no screen
    assert not _holds(hall.kiosk.log(), "1111") and not _holds(hall.hall.log(), "1111")
    screens = [p.get("message", "") for p in hall.recorder.payloads(T.status("kiosk-K1"))]
    assert not any("1111" in m for m in screens)


def test_a_wrong_pin_gives_no_override(hall: Hall) -> None:
    hall.fill_quota()
    hall.staff_pin("1", "9999")
    hall.said("工作人员已授权，请刷市民身份证（绿色通道请按绿色通道键）")  # the hall decides
    hall.type_id(TYPED)
    hall.said("工作人员授权未通过：工号或密码错误，本次未取号")
    assert len(hall.tickets()) == 2 and len(hall.printer.wait_for_tickets(3)) == 3  # nor a slip
    assert "wrong staff number or PIN" in hall.hall.log()
    # a staff number nobody has is refused at the kiosk, before any request
    sent = len(hall.requests())
    hall.staff_pin("77", "1111")
    hall.said("工号或密码错误，请重新授权")
    # S002 has a PIN but no override right: the kiosk says so and arms nothing
    hall.staff_pin("2", "2222")
    hall.said("该工作人员无超额授权权限")
    hall.type_id(TYPED)
    assert "额满" in hall.printer.wait_for_tickets(4)[-1].text  # over the quota: a slip
    assert all("override" not in r for r in hall.requests()[sent:])


def test_green_channel_after_staff_authorisation(hall: Hall) -> None:
    hall.keys.tap("KEY_G")  # nobody authorised: no green channel
    hall.said("绿色通道须工作人员先刷工作证或输入工号密码")
    hall.staff_pin("1", "1111")
    hall.said("工作人员已授权，请刷市民身份证（绿色通道请按绿色通道键）")
    hall.keys.tap("KEY_G")
    hall.said("已选绿色通道，请刷市民身份证或输入身份证号")
    hall.type_id(TYPED)
    ticket = hall.printer.wait_for_tickets(1)[0]
    assert "绿色通道" in ticket.text and "A001" in ticket.text
    assert hall.tickets() == [("A001", "waiting", "green", "S001")]
    request = hall.requests()[-1]
    assert request["priority"] == "green" and request["override"]["staff"] == "S001"
    # the next citizen is an ordinary one again
    hall.type_id(with_check("44010619900101234"))
    hall.printer.wait_for_tickets(2)
    assert hall.tickets()[1][2:] == (None, None)


def test_forged_overrides_are_forbidden(hall: Hall) -> None:
    """What a kiosk (or whoever holds its broker password) may not do by naming staff."""
    other = Device(hall.broker.url, "kiosk-K2")
    person = {"key": "ab" * 32, "age": 40}
    for _ in range(2):
        assert other.request("issue", service="social", person=person)["ok"]
    refused = other.request("issue", service="social", person=person)
    assert refused["error"]["code"] == "quota_exceeded"
    forgeries = [
        {"staff": "S001"},  # a bare staff id
        {"staff": "S001", "pin": "0000"},  # a guessed PIN
        {"staff": "S002", "pin": "2222"},  # the right PIN of a clerk without the right
        {"card": STAFF_UID},  # the raw card UID instead of its proof
        {"card": card_proof(b"not the site secret at all", STAFF_UID)},
    ]
    for override in forgeries:
        answer = other.request("issue", service="social", person=person, override=override)
        assert answer["error"]["code"] == "forbidden", override
    green = other.request("issue", service="social", person=person, priority="green")
    assert green["error"]["code"] == "forbidden"
    too_old = other.request("issue", service="tax", person={"key": "cd" * 32, "age": 131})
    assert too_old["error"]["code"] == "bad_request"
    proven = other.request(
        "issue", service="social", person=person, override={"card": card_proof(SECRET, STAFF_UID)}
    )
    assert proven["ok"] and proven["ticket"]["override"] is True
    other.close()
    assert [t[3] for t in hall.tickets()] == [None, None, "S001"]


def _holds(text: str, pin: str) -> bool:
    """The PIN as a word of its own (not inside a port number or a hex rid)."""
    return re.search(rf"(?<![0-9A-Za-z]){pin}(?![0-9A-Za-z])", text) is not None


def test_typed_id_number_with_a_wrong_check_character_is_refused(hall: Hall) -> None:
    good = with_check("44010619850505321")
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    hall.keys.tap("KEY_F2")
    hall.keys.type(*[f"KEY_{c}" for c in bad], "KEY_ENTER")
    wait_until(
        lambda: hall.status().get("message") == "身份证号码有误，请重新输入", what="refusal shown"
    )
    assert hall.tickets() == []
    assert "check character does not match" in hall.kiosk.log()
    hall.keys.type(*[f"KEY_{c}" for c in good], "KEY_ENTER")
    ticket = hall.printer.wait_for_tickets(1)[0]
    assert "B001" in ticket.text and "税务业务" in ticket.text


def test_paper_out_issues_nothing_and_says_why(hall: Hall) -> None:
    hall.printer.panel.paper = "out"
    hall.keys.tap("KEY_F1")
    hall.swipe(ADULT)
    wait_until(lambda: hall.status().get("state") == "out_of_service", what="out of service")
    assert hall.status()["printer"]["paper"] == "out"
    assert hall.tickets() == [] and hall.printer.tickets == []
    hall.printer.panel.paper = "near_end"
    wait_until(
        lambda: hall.status().get("printer", {}).get("state") == "near_end",
        timeout=15,
        what="printer back, paper near end",
    )
    assert hall.status()["state"] == "in_service"


def test_printer_dying_mid_ticket_voids_the_number(hall: Hall) -> None:
    hall.printer.panel.die_after = 60  # the status query, then part of the ticket
    hall.keys.tap("KEY_F1")
    hall.swipe(ADULT)
    hall.recorder.wait_for(T.event("ticket.voided"))
    assert hall.tickets()[0][:2] == ("A001", "voided")
    hall.printer.revive()
    hall.keys.tap("KEY_F1")
    hall.swipe(ELDER)
    hall.printer.wait_for_tickets(1)
    counter = Device(hall.broker.url, "counter-W1")
    called = counter.request("call")
    assert called["ticket"]["number"] == "A002"  # the voided number is never called
    assert counter.request("call")["ticket"] is None
    counter.close()


# The kiosk gives up on the hall after two attempts of half a second (2 s × 3 by default).
QUICK_TO_GIVE_UP = "\n[devices]\nhall_timeout_ms = 500\nhall_attempts = 2\n"
NO_LEASES = QUICK_TO_GIVE_UP + "lease_numbers = 0\n"  # no offline issuing (tests/test_offline.py)


@pytest.mark.parametrize("hall", [NO_LEASES], indirect=True, ids=["quick-to-give-up"])
def test_hall_unreachable_means_out_of_service_and_no_ticket(hall: Hall) -> None:
    hall.hall.stop()
    wait_until(lambda: hall.status().get("state") == "out_of_service", what="hall offline seen")
    assert "hall not reachable" in hall.status()["reasons"]
    hall.keys.tap("KEY_F1")
    hall.swipe(ADULT)
    wait_until(lambda: "no ticket:" in hall.kiosk.log(), what="the kiosk to give up on the hall")
    assert hall.status()["state"] == "out_of_service" and hall.printer.tickets == []
    hall.hall.start()
    wait_until(lambda: hall.status().get("state") == "in_service", what="back in service")
    hall.keys.tap("KEY_F1")
    hall.swipe(ADULT)
    assert "A001" in hall.printer.wait_for_tickets(1)[0].text


def test_no_raw_id_number_or_name_anywhere(hall: Hall) -> None:
    hall.keys.tap("KEY_F1")
    hall.swipe(ELDER)
    typed = with_check("44010619850505321")
    hall.keys.tap("KEY_F2")
    hall.keys.type(*[f"KEY_{c}" for c in typed], "KEY_ENTER")
    hall.printer.wait_for_tickets(2)
    secrets = [ELDER.id_number, typed, ELDER.name, ELDER.id_number[6:14] + ELDER.id_number[14:]]
    places = {
        "database": (hall.tmp / "hall" / "hall.sqlite").read_bytes()
        + (hall.tmp / "hall" / "hall.sqlite-wal").read_bytes()
        if (hall.tmp / "hall" / "hall.sqlite-wal").exists()
        else (hall.tmp / "hall" / "hall.sqlite").read_bytes(),
        "hall log": (hall.tmp / "hall" / "hall.log").read_bytes(),
        "kiosk log": (hall.tmp / "kiosk.log").read_bytes(),
        "mqtt": b"\n".join(m.payload for m in hall.recorder.messages),
    }
    for where, data in places.items():
        for secret in secrets:
            for encoding in ("utf-8", "utf-16-le", "gb18030"):
                assert secret.encode(encoding) not in data, f"{where} holds personal data"
    tickets = "".join(t.text for t in hall.printer.tickets)
    assert ELDER.id_number not in tickets and "440111********" in tickets
    events = json.dumps(hall.recorder.payloads(T.event("ticket.issued")))
    assert "person" not in events


def test_pc_sc_reader_unplugged_and_back(hall: Hall, pcsc: PcscStack) -> None:
    wait_until(lambda: "Virtual PCD" in hall.kiosk.log(), what="PC/SC reader found")
    pcsc.stop()  # the reader (and pcscd with it) disappears
    wait_until(
        lambda: any(
            str(v).startswith("offline") for v in hall.status().get("readers", {}).values()
        ),
        what="reader offline",
    )
    pcsc.start()
    wait_until(
        lambda: all(str(v).startswith("ok") for v in hall.status()["readers"].values()),
        timeout=15,
        what="reader back",
    )
    hall.keys.tap("KEY_F1")
    hall.card.insert(CITIZEN_UID)
    assert "A001" in hall.printer.wait_for_tickets(1)[0].text


def test_serial_printer_on_a_pty(tmp_path: Path) -> None:
    """A status answer (2 bytes) is taken as soon as it is in, not after the timeout."""
    from kiosk.printer import TicketPrinter
    from kiosk.ticket import render
    from quhao.config import TicketTemplate

    printer = PrinterSimulator(tmp_path / "out", link=tmp_path / "ttyPrinter").start()
    uri = f"serial://{tmp_path}/ttyPrinter?baud=19200"
    driver = TicketPrinter(uri, timeout_s=10.0)
    began = time.monotonic()
    assert driver.status().state == "ok"
    job = render(TicketTemplate().lines, {"number": "C007", "service_name": "公积金业务"}, "q:1")
    assert driver.print_job(job).state == "ok"  # its status before and after the job
    ticket = printer.wait_for_tickets(1)[0]
    assert "C007" in ticket.text and ticket.qr_codes == ["q:1"]
    printer.panel.cover_open = True
    assert driver.status().state == "cover_open"
    # four answers, each far quicker than one timeout (waiting it out took 1 s each)
    assert time.monotonic() - began < 5.0
    printer.panel.cover_open, printer.panel.silent = False, True
    silent_from = time.monotonic()
    assert TicketPrinter(uri, timeout_s=0.3).status().state == "no_answer"
    assert time.monotonic() - silent_from >= 0.3  # no answer: the whole timeout
    printer.close()


# ---- the pure parts: keypad meaning and flow ---------------------------------------------


def _key(name: str) -> KeyEvent:
    return KeyEvent(0.0, name, 0, 1)


def test_staff_entry_on_the_kiosk_keypad() -> None:
    entry = IdEntry(KioskKeys(), ("social", "tax"), staff_timeout_s=30)
    assert entry.press(_key("KEY_S"), 0) == StaffStep("number")
    for name in ("KEY_0", "KEY_0", "KEY_7", "KEY_BACKSPACE", "KEY_1", "KEY_X"):
        assert entry.press(_key(name), 1) is None
    assert entry.press(_key("KEY_ENTER"), 2) == StaffStep("pin")
    assert entry.press(_key("KEY_ENTER"), 2) is None  # no PIN yet
    for name in ("KEY_4", "KEY_8", "KEY_2", "KEY_1"):
        entry.press(_key(name), 3)
    assert "4821" not in repr(entry)
    typed = entry.press(_key("KEY_ENTER"), 4)
    assert typed == StaffTyped("001", "4821") and "4821" not in repr(typed)
    assert entry.stage is None
    # a citizen's number again, and the green key outside a staff entry
    for name in ("KEY_1", "KEY_2"):
        entry.press(_key(name), 5)
    assert entry.press(_key("KEY_ENTER"), 5) == NumberTyped("12")
    assert entry.press(_key("KEY_G"), 5) == GreenChosen()
    # a staff entry left half-typed is dropped after the timeout; ESC drops it at once
    entry.press(_key("KEY_S"), 10)
    entry.press(_key("KEY_1"), 10)
    assert entry.tick(39) is False and entry.tick(40) is True and entry.stage is None
    entry.press(_key("KEY_S"), 50)
    entry.press(_key("KEY_1"), 50)
    assert entry.press(_key("KEY_9"), 81) is None  # the press itself notices the timeout
    assert entry.press(_key("KEY_ENTER"), 81) == NumberTyped("9")
    entry.press(_key("KEY_S"), 90)
    assert entry.press(_key("KEY_ESC"), 91) == Cleared() and entry.stage is None


def test_flow_carries_the_staff_proof_and_green_needs_it() -> None:
    person = from_number(b"k" * 32, TYPED, date(2026, 11, 23))
    flow = KioskFlow(("social",), timeout_s=30)
    assert flow.choose_green(0) is False  # no authorisation: no green channel
    by_pin = StaffProof("S001", pin="1111")
    flow.authorise(by_pin, 1)
    assert flow.choose_green(2) is True
    assert flow.present(person, 3) == Issue("social", person, by_pin, "green")
    assert flow.present(person, 4) == Issue("social", person, None)  # once only
    by_card = StaffProof("S001", card="ab" * 32)
    flow.appoint(5)
    flow.authorise(by_card, 5)
    issued = flow.present(person, 6)
    assert issued == Issue("social", person, by_card)  # the key alone: no appointment lane
    assert by_card.wire() == {"card": "ab" * 32} and by_pin.wire() == {
        "staff": "S001",
        "pin": "1111",
    }
    assert "1111" not in repr(by_pin) and "abab" not in repr(issued)
    flow.authorise(by_pin, 10)
    flow.choose_green(11)
    assert flow.tick(41) is True and flow.override is None and flow.green is False


def test_ages_outside_0_to_130_never_leave_the_kiosk() -> None:
    today = date(2026, 11, 23)
    assert from_number(b"k" * 32, TYPED, today).age == 41
    for first17 in ("44010618800101123", "44010620300101123"):  # 146 years old; born in 2030
        with pytest.raises(ValueError):
            from_number(b"k" * 32, with_check(first17), today)
    assert Person("ab" * 32, None, "", "pcsc").wire() == {"key": "ab" * 32, "age": None}

"""The kiosk through real parts: pcscd + vpcd, a SAM pty, a TCP ESC/POS printer, the hall."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from kiosk.idnumber import with_check
from quhao.broker import Mosquitto, free_port
from quhao.topics import Topics
from simulators.idcard import PcscStack, VirtualIdCard
from simulators.keys import KeypadFeeder
from simulators.printer import PrinterSimulator
from simulators.sam import CardHolder, SamSimulator
from tests.helpers import SITE, SITE_ID, Daemon, Device, Recorder, hall_daemon, wait_until

T = Topics(SITE_ID)
ELDER = CardHolder("王老伯", with_check("44011119480315123"), date(1948, 3, 15))
ADULT = CardHolder("李小明", with_check("44010619900101234"), date(1990, 1, 1), gender="1")
CITIZEN_UID = "1122334455667788"
STAFF_UID = "04A10001"  # S001, may override (tests/sites/small.toml)


def kiosk_site(tmp: Path, printer_port: int) -> Path:
    text = SITE.read_text()
    head, tail = text.split('[[kiosks]]\nname = "kiosk-K1"\n', 1)
    kiosk = (
        '[[kiosks]]\nname = "kiosk-K1"\n'
        'readers = ["pcsc://?reader=Virtual%20PCD%2000%2000", '
        f'"serial://{tmp}/sam-K1?baud=115200"]\n'
        f'keypad = "events://{tmp}/keys-K1.fifo"\n'
        f'printer = "tcp://127.0.0.1:{printer_port}"\n'
    )
    site = tmp / "site.toml"
    site.write_text(head + kiosk + tail)
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
        time.sleep(0.2)

    _reads = 0

    def status(self) -> dict:
        return self.recorder.last(T.status("kiosk-K1")) or {}


@pytest.fixture
def hall(broker: Mosquitto, tmp_path: Path, pcsc: PcscStack) -> Iterator[Hall]:
    printer = PrinterSimulator(tmp_path / "tickets", port=free_port()).start()
    site = kiosk_site(tmp_path, printer.port)
    sam = SamSimulator(tmp_path / "sam-K1").start()
    keys = KeypadFeeder(tmp_path / "keys-K1.fifo")
    card = VirtualIdCard(pcsc.port)
    recorder = Recorder(broker.url, "quhao/#", client_id="kiosk-test-recorder")
    hall_proc = hall_daemon(broker.url, tmp_path / "hall", config=site).start()
    kiosk = Daemon(
        [
            "kiosk",
            "--config",
            str(site),
            "--broker",
            broker.url,
            "--device",
            "kiosk-K1",
            "--log-level",
            "DEBUG",
        ],
        tmp_path / "kiosk.log",
        "kiosk kiosk-K1 serving",
    ).start()
    running = Hall(tmp_path, broker, hall_proc, kiosk, printer, sam, card, keys, recorder)
    wait_until(lambda: running.status().get("state") == "in_service", what="kiosk in service")
    wait_until(lambda: "SAM reader ok" in kiosk.log(), what="SAM reader ready")
    yield running
    card.remove()
    assert kiosk.stop() == 0, kiosk.log()
    hall_proc.stop()
    recorder.close()
    printer.close()
    sam.close()
    keys.close()


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
    time.sleep(1.0)
    assert len(hall.printer.tickets) == 1 and len(hall.tickets()) == 1
    # taken off and put on again: a second presentation, a second ticket
    hall.card.remove()
    time.sleep(0.5)
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
    hall.card.remove()
    hall.keys.tap("KEY_F1")
    hall.swipe(ELDER)
    hall.printer.wait_for_tickets(4)
    assert hall.tickets()[2][3] == "S001"


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


def test_hall_unreachable_means_out_of_service_and_no_ticket(hall: Hall) -> None:
    hall.hall.stop()
    wait_until(lambda: hall.status().get("state") == "out_of_service", what="hall offline seen")
    assert "hall not reachable" in hall.status()["reasons"]
    hall.keys.tap("KEY_F1")
    hall.swipe(ADULT)
    time.sleep(7)  # three attempts of two seconds
    assert hall.printer.tickets == []
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
    from kiosk.printer import TicketPrinter
    from kiosk.ticket import render
    from quhao.config import TicketTemplate

    printer = PrinterSimulator(tmp_path / "out", link=tmp_path / "ttyPrinter").start()
    driver = TicketPrinter(f"serial://{tmp_path}/ttyPrinter?baud=19200")
    assert driver.status().state == "ok"
    job = render(TicketTemplate().lines, {"number": "C007", "service_name": "公积金业务"}, "q:1")
    assert driver.print_job(job).state == "ok"
    ticket = printer.wait_for_tickets(1)[0]
    assert "C007" in ticket.text and ticket.qr_codes == ["q:1"]
    printer.panel.cover_open = True
    assert driver.status().state == "cover_open"
    printer.panel.cover_open, printer.panel.silent = False, True
    assert driver.status().state == "no_answer"
    printer.close()

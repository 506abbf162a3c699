"""Pure cores of the kiosk: GA 467 frames and card text, GB 11643, ESC/POS, the flow."""

from __future__ import annotations

import contextlib
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk import sam
from kiosk.entry import AppointmentChosen, IdEntry, NumberTyped, ServiceChosen
from kiosk.escpos_status import decode
from kiosk.flow import Issue, KioskFlow
from kiosk.person import Person, from_identity, from_number, from_uid
from kiosk.ticket import render
from quhao import idnumber
from quhao.config import KioskKeys, TicketTemplate
from quhao.devices.inputevent import KeyEvent
from simulators.printer import Interpreter, Panel
from simulators.sam import CardHolder, card_text

bodies = st.binary(min_size=1, max_size=1500)
SECRET = b"0123456789abcdef-secret"


@given(st.lists(bodies, max_size=4), st.integers(1, 64))
def test_sam_frames_round_trip_in_any_chunking(sent: list[bytes], chunk: int) -> None:
    stream = b"".join(sam.encode(body) for body in sent)
    decoder = sam.Decoder()
    out: list = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i : i + chunk])
    assert out == sent


@given(st.binary(max_size=3000))
def test_random_bytes_never_crash_the_sam_decoder(data: bytes) -> None:
    for item in sam.Decoder().feed(data):
        if isinstance(item, bytes):
            with contextlib.suppress(sam.FrameError):
                sam.parse_response(item)


def test_sam_command_bytes_match_the_standard() -> None:
    assert sam.command(sam.FIND_CARD) == bytes.fromhex("AAAAAA96690003200122")
    assert sam.command(sam.SELECT_CARD) == bytes.fromhex("AAAAAA96690003200221")
    assert sam.command(sam.READ_BASE) == bytes.fromhex("AAAAAA96690003300132")


def test_damaged_sam_frame_is_dropped_and_the_next_read() -> None:
    good = sam.encode(bytes([0, 0, 0x9F]))
    bad = bytearray(good)
    bad[-1] ^= 0x55
    out = sam.Decoder().feed(bytes(bad) + good)
    assert isinstance(out[0], sam.FrameError) and out[-1] == bytes([0, 0, 0x9F])


holders = st.builds(
    CardHolder,
    name=st.text(alphabet="王李张刘陈杨黄赵吴周", min_size=1, max_size=15),
    id_number=st.integers(10**16, 10**17 - 1).map(lambda n: idnumber.with_check(str(n))),
    birth=st.dates(date(1900, 1, 1), date(2025, 12, 31)),
    gender=st.sampled_from("12"),
    valid_to=st.sampled_from(["20400101", "长期"]),
    card_type=st.sampled_from([" ", "J", "Y"]),
)


@given(holders)
def test_card_text_of_every_type_parses_back(holder: CardHolder) -> None:
    identity = sam.parse_text(card_text(holder))
    assert identity.name == holder.name and identity.id_number == holder.id_number
    assert identity.birth == holder.birth and identity.valid_to == holder.valid_to
    assert (
        identity.card_type
        == {" ": "resident", "J": "hmt_residence", "Y": "foreign_permanent_2023"}[holder.card_type]
    )
    assert holder.id_number not in repr(identity)


def test_foreign_permanent_i_card() -> None:
    holder = CardHolder(
        "史密斯",
        "USA123456789012",
        date(1970, 5, 6),
        card_type="I",
        english_name="SMITH JOHN",
        nationality="USA",
    )
    identity = sam.parse_text(card_text(holder))
    assert identity.card_type == "foreign_permanent"
    assert identity.fields["english_name"] == "SMITH JOHN"
    person = from_identity(SECRET, identity, date(2026, 11, 23))
    assert person.age == 56 and person.masked == "USA123*****9012"


@given(st.integers(10**16, 10**17 - 1), st.integers(0, 16), st.integers(1, 9))
def test_gb11643_accepts_valid_and_catches_one_wrong_digit(n: int, pos: int, delta: int) -> None:
    number = idnumber.with_check(str(n))
    if idnumber.birth_date(number) is None:
        with pytest.raises(idnumber.InvalidIdNumber):
            idnumber.validate(number)
        return
    assert idnumber.validate(number.lower()) == number
    wrong = number[:pos] + str((int(number[pos]) + delta) % 10) + number[pos + 1 :]
    with pytest.raises(idnumber.InvalidIdNumber):
        idnumber.validate(wrong)  # MOD 11-2 catches every single-digit error


def test_person_keys_are_keyed_hashes_and_ages_come_from_the_birth_date() -> None:
    number = idnumber.with_check("11010519491231002")
    person = from_number(SECRET, number, date(2026, 11, 23))
    assert person.age == 76 and person.masked == "110105********002X"
    assert number not in repr(person) and len(person.key) == 64
    assert from_number(b"another-secret-value", number, date(2026, 11, 23)).key != person.key
    assert from_uid(SECRET, "1122334455667788").age is None


@given(st.binary(max_size=3000))
def test_random_bytes_never_crash_the_escpos_interpreter(data: bytes) -> None:
    printer = Interpreter(Panel())
    for cut in range(0, len(data), 97):
        printer.feed(data[cut : cut + 97])


def test_interpreter_reads_what_the_ticket_layout_writes() -> None:
    fields = {
        "hall_name": "白云区政务服务中心",
        "service_name": "社保业务",
        "number": "A023",
        "ahead": 5,
        "masked_id": "110105********002X",
        "notice": "过号无效",
    }
    printer = Interpreter(Panel(paper="near_end"))
    answer = printer.feed(
        b"\x10\x04\x02\x10\x04\x04" + render(TicketTemplate().lines, fields, "quhao:x:1")
    )
    assert decode(answer[0], answer[1]).state == "near_end"
    ticket = printer.tickets[0]
    assert ticket.qr_codes == ["quhao:x:1"] and printer.unknown == 0
    assert [line.text for line in ticket.lines if line.width == 3] == ["A023"]


def test_status_bytes() -> None:
    assert decode(0x12, 0x12).state == "ok"
    assert decode(0x16, 0x12).state == "cover_open"
    assert decode(0x32, 0x7E).state == "out"
    assert decode(None, 0x12).state == "no_answer"
    assert decode(0xFF, 0x12).state == "no_answer"


def test_kiosk_flow_swipe_first_or_key_first_and_timeout() -> None:
    person = Person("ab" * 32, 30, "110105********002X", "typed")
    flow = KioskFlow(("social", "tax"), timeout_s=30)
    # no service chosen: a check-in first (the hall says if the person is booked) …
    assert flow.present(person, 0) == Issue("", person, None, checkin=True)
    # … refused: the person waits for a service key
    assert flow.hold(person, 0) is None and flow.prompt == "请选择业务"
    assert flow.choose("tax", 5) == Issue("tax", person, None)
    assert flow.choose("social", 10) is None
    assert flow.tick(39) is False and flow.tick(40) is True
    assert flow.present(person, 50) == Issue("", person, None, checkin=True)  # forgotten
    flow.reset()
    flow.authorise("S001", 60)
    flow.choose("social", 61)
    assert flow.present(person, 62) == Issue("social", person, "S001")
    assert flow.override is None  # one ticket only
    single = KioskFlow(("enquiry",))
    assert single.present(person, 0) == Issue("enquiry", person, None)
    single.appoint(10)  # 预约 key, then the card: the hall decides (a booking), not the key
    assert single.present(person, 11) == Issue("enquiry", person, None)
    assert single.present(person, 12) == Issue("enquiry", person, None)  # once only


def test_id_entry_keys() -> None:
    entry = IdEntry(KioskKeys(), ("social", "tax"))

    def key(name: str) -> KeyEvent:
        return KeyEvent(0.0, name, 0, 1)

    assert entry.press(key("KEY_F2")) == ServiceChosen("tax")
    assert entry.press(key("KEY_A")) == AppointmentChosen()
    for name in ("KEY_1", "KEY_2", "KEY_9", "KEY_BACKSPACE", "KEY_KP3", "KEY_X"):
        entry.press(key(name))
    assert entry.press(key("KEY_ENTER")) == NumberTyped("123X")
    assert entry.press(key("KEY_ENTER")) is None and "123X" not in repr(NumberTyped("123X"))

"""One presentation, one read: card readers that drop out for a moment.

The rule (`quhao.devices.presence`) property-tested with time passed in; each reader
against its simulator with dropouts; and the kiosk daemon end to end: a card lying
on the SAM reader through dropouts gives one ticket, no quota slips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quhao.broker import Mosquitto, free_port
from quhao.devices.cards import CardRead
from quhao.devices.presence import Fingerprints, Presence
from quhao.idnumber import with_check
from quhao.owner import OwnerLoop
from quhao.topics import Topics
from simulators.idcard import PcscStack, VirtualIdCard
from simulators.printer import PrinterSimulator
from simulators.sam import CardHolder, SamSimulator
from tests.helpers import SITE, SITE_ID, Daemon, Recorder, hall_daemon, wait_for_reader, wait_until

T = Topics(SITE_ID)
ADULT = CardHolder("李小明", with_check("44010619900101234"), date(1990, 1, 1))
OTHER = CardHolder("陈小红", with_check("44010619920202345"), date(1992, 2, 2), gender="2")
READ_BASE = (0x30, 0x01)
FIND = (0x20, 0x01)


# ---- the rule, with time passed in ------------------------------------------------

A, B = b"card A", b"card B"

# A timeline is a list of observations in time order: ("there", t) the reader finds a
# card (which one it does not say: GA 467 find), ("gone", t) it answers "no card".


@st.composite
def lying(draw: st.DrawFn, absent_s: float, start: float) -> list[tuple[str, float]]:
    """A card lying on the reader from `start`, with dropouts each shorter than
    `absent_s` (from the first "no card" to the card found again)."""
    events: list[tuple[str, float]] = []
    t = start
    for _ in range(draw(st.integers(1, 6))):
        for _ in range(draw(st.integers(1, 4))):
            events.append(("there", t))
            t += draw(st.floats(0.001, 2.0))  # a card may lie there for long
        gone = draw(st.integers(0, 5))
        if gone:
            span = draw(st.floats(0.0, 0.99)) * absent_s
            at = sorted(draw(st.lists(st.floats(0.0, 0.99), min_size=gone, max_size=gone)))
            events += [("gone", t + f * span) for f in [0.0, *at[1:]]]
            t += span
    events.append(("there", t))
    return events


def drive(
    presence: Presence,
    events: list[tuple[str, float]],
    card: bytes,
    fails: list[bool],
    sam_style: bool,
) -> list[tuple[float, bool]]:
    """Feed the timeline as a reader does. SAM style: a found card is read when the rule
    asks for it. PC/SC style: every report of a card comes with its serial number. A
    read may fail (`fails`, taken in turn): the card is there, unidentified. Each
    successful read: its time, and whether it was a new presentation (delivered)."""
    reads: list[tuple[float, bool]] = []
    failures = iter(fails)
    for kind, t in events:
        if kind == "gone":
            presence.absent(t)
        elif sam_style and not presence.present(t):
            continue  # the same card, without a break: not read
        elif next(failures, False):
            presence.present(t)
        else:
            reads.append((t, presence.identified(card, t)))
    return reads


thresholds = st.floats(0.01, 10.0)
failures = st.lists(st.booleans(), max_size=20)


@given(st.data(), thresholds, failures, st.booleans())
def test_dropouts_shorter_than_the_threshold_never_give_a_second_read(
    data: st.DataObject, absent_s: float, fails: list[bool], sam_style: bool
) -> None:
    events = data.draw(lying(absent_s, 100.0))
    reads = drive(Presence(absent_s), events, A, fails, sam_style)
    delivered = [t for t, new in reads if new]
    assert len(delivered) == (1 if reads else 0)  # only the first read (unless all failed)


@given(st.data(), thresholds, failures, st.booleans(), st.floats(1.001, 5.0), st.integers(1, 6))
def test_an_absence_longer_than_the_threshold_then_the_same_card_gives_one_more_read(
    data: st.DataObject,
    absent_s: float,
    fails: list[bool],
    sam_style: bool,
    longer: float,
    gone: int,
) -> None:
    first = data.draw(lying(absent_s, 100.0))
    left = first[-1][1] + 0.05
    back = left + longer * absent_s
    away = [("gone", left + i * (back - left) / gone) for i in range(gone)]
    again = data.draw(lying(absent_s, back))
    reads = drive(Presence(absent_s), [*first, *away, *again], A, fails, sam_style)
    before = [new for t, new in reads if t < back]
    after = [new for t, new in reads if t >= back]
    assert sum(before) == (1 if before else 0)  # one read for the first presentation
    assert sum(after) == (1 if after else 0)  # and exactly one more for the second


@given(
    st.lists(st.tuples(st.sampled_from(["gone", "there", A, B]), st.floats(0.0, 1.0)), max_size=40),
    thresholds,
)
def test_a_different_card_always_gives_a_read_and_the_same_card_only_after_an_absence(
    steps: list[tuple[str | bytes, float]], absent_s: float
) -> None:
    presence = Presence(absent_s)
    t, last, gone_since, long_absence = 0.0, None, None, False
    for what, dt in steps:
        t += dt
        if what == "gone":
            presence.absent(t)
            gone_since = t if gone_since is None else gone_since
            continue
        if gone_since is not None and t - gone_since >= absent_s:
            long_absence = True
        gone_since = None
        if what == "there":
            presence.present(t)
            continue
        assert isinstance(what, bytes)
        new = presence.identified(what, t)
        assert new == (what != last or long_absence)
        last, long_absence = what, False


def test_a_card_held_without_a_break_is_not_read_again_and_a_break_asks_for_a_read() -> None:
    presence = Presence(0.5)
    assert presence.present(0.0) and presence.identified(A, 0.1)
    assert not presence.present(60.0)  # lying there for a minute: no read needed
    presence.absent(60.05)
    assert presence.present(60.1)  # after a break: which card is it?
    assert not presence.identified(A, 60.2) and presence.holding
    presence.absent(61.0)
    presence.absent(61.5)  # 0.5 s of "no card": removed, and forgotten
    assert not presence.holding


def test_threshold_zero_is_the_old_rule_any_no_card_is_a_removal() -> None:
    presence = Presence(0.0)
    assert presence.identified(A, 0.0)
    presence.absent(0.01)
    assert presence.identified(A, 0.02)
    with pytest.raises(ValueError):
        Presence(-0.1)


def test_fingerprints_tell_cards_apart_and_mean_nothing_elsewhere() -> None:
    text = ADULT.id_number.encode("utf-16-le")
    mine, theirs = Fingerprints(), Fingerprints()
    assert mine.of(text) == mine.of(text) != mine.of(OTHER.id_number.encode("utf-16-le"))
    assert mine.of(text) != theirs.of(text)  # a random key per reader
    assert ADULT.id_number not in repr(mine)


# ---- each reader against its simulator -------------------------------------------


class FakeClock:
    """Time passed in: stands still until the test moves it; counts how often the reader
    looked (a reader looks when it notes a card there or gone)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.asked = 0

    def __call__(self) -> float:
        self.asked += 1
        return self.now


class ShiftedClock:
    """Real monotonic time that the test can move forward at once (`jump`): the SAM
    reader's polls keep their real cadence, and half a minute of "no card" takes no time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds


def test_sam_reader_dropouts_and_a_removal_with_an_injected_clock(tmp_path: Path) -> None:
    """The reader in an owner loop of its own, whose clock the test moves."""
    from kiosk.readers.sam_serial import SamReader

    sim = SamSimulator(tmp_path / "sam").start()
    clock = ShiftedClock()
    loop = OwnerLoop("test-sam", monotonic=clock)
    reads: list[CardRead] = []
    # 30 s: dropouts of a few 50 ms polls are short however late a loaded machine polls
    reader = SamReader(
        f"serial://{tmp_path}/sam?baud=115200", "test SAM", reads.append, absent_s=30
    )
    loop.post(lambda: reader.attach(loop))
    loop.start()
    try:
        sim.present(ADULT)
        wait_until(lambda: reads, what="the first read")
        assert reads[0].identity is not None and reads[0].identity.id_number == ADULT.id_number
        for polls in (1, 3, 5):  # each far shorter than absent_s
            sim.dropout(polls)
            wait_until(lambda: sim.dropout_left == 0, what="the dropout")
        finds = sim.commands.count(FIND)
        wait_until(lambda: sim.commands.count(FIND) > finds + 2, what="the card found again")
        assert len(reads) == 1 and sim.commands.count(READ_BASE) > 1  # read, not delivered
        sim.remove()
        wait_until(lambda: sim.commands.count(FIND) > finds + 5, what="no-card answers")
        clock.jump(30)  # half a minute of "no card"
        wait_until(lambda: not reader.presence.holding, what="the card counted as removed")
        sim.present(ADULT)
        wait_until(lambda: len(reads) == 2, what="the second presentation read")
        # swapped for another card at once: a different card is a new read
        sim.remove()
        finds = sim.commands.count(FIND)
        wait_until(lambda: sim.commands.count(FIND) > finds + 1, what="a no-card answer")
        sim.present(OTHER)
        wait_until(lambda: len(reads) == 3, what="the other card read")
        assert reads[2].identity is not None and reads[2].identity.name == OTHER.name
        assert {read.reader for read in reads} == {"test SAM"}
    finally:
        loop.post(reader.close)
        loop.stop()
        loop.join(5)
        sim.close()


def test_pcsc_reader_flicker_removal_and_swap(
    pcsc: PcscStack, caplog: pytest.LogCaptureFixture
) -> None:
    from quhao.devices.pcsc import PcscReader

    caplog.set_level("DEBUG", logger="quhao.pcsc")
    card = VirtualIdCard(pcsc.port, slot=1)
    clock = FakeClock()
    reads: list[str | None] = []
    reader = PcscReader(
        "pcsc://?reader=Virtual%20PCD%2000%2001",
        "test PC/SC",
        lambda read: reads.append(read.uid),
        absent_s=1.0,  # pcscd shows a flicker as 0.4 s EMPTY (one of its polls)
        clock=clock,
    )
    stop = threading.Event()
    thread = threading.Thread(target=reader.run, args=(stop,), daemon=True)
    thread.start()
    try:
        card.insert("1122334455667788")
        wait_until(lambda: reads, what="the first read")
        card.dropout(0.05)
        wait_until(lambda: "back after a dropout" in caplog.text, what="the flicker seen")
        assert reads == ["1122334455667788"]
        asked = clock.asked
        card.remove()
        wait_for_reader("Virtual PCD 00 01", card=False)
        wait_until(lambda: clock.asked > asked, what="the reader to note the card gone")
        clock.now += 1.1  # longer than absent_s: as if pcscd had reported it EMPTY that long
        card.insert("1122334455667788")
        wait_until(lambda: len(reads) == 2, what="the second presentation read")
        card.remove()
        card.insert("AABBCCDDEEFF0011")  # another card at once
        wait_until(lambda: len(reads) == 3, what="the other card read")
        assert reads[2] == "AABBCCDDEEFF0011"
    finally:
        card.remove()
        stop.set()
        thread.join(5)


# ---- end to end: the kiosk daemon, a SAM pty, a printer, the hall -------------------


def one_service_site(tmp: Path, printer_port: int) -> Path:
    """kiosk-K1 with only the SAM reader and one service (社保, quota 2 in 2 hours): every
    read of a card is an issue at once, so a second read would be a second ticket."""
    text = SITE.read_text()
    head, tail = text.split('[[kiosks]]\nname = "kiosk-K1"\n', 1)
    kiosk = (
        '[[kiosks]]\nname = "kiosk-K1"\nservices = ["social"]\n'
        f'readers = ["serial://{tmp}/sam-K1?baud=115200"]\n'
        f'printer = "tcp://127.0.0.1:{printer_port}"\n'
    )
    site = tmp / "site.toml"
    site.write_text(head + kiosk + tail)
    (tmp / "test.secret").write_text((SITE.parent / "test.secret").read_text())
    return site


@dataclass
class Kiosk:
    tmp: Path
    kiosk: Daemon
    printer: PrinterSimulator
    sam: SamSimulator
    recorder: Recorder

    def issued(self) -> int:
        return len(self.recorder.payloads(T.event("ticket.issued")))

    def refused(self) -> int:
        return len(self.recorder.payloads(T.event("ticket.refused")))

    def reads(self) -> int:
        return self.sam.commands.count(READ_BASE)

    def wait_finds(self, count: int) -> None:
        """Until the kiosk has sent `count` more find commands (50 ms or more apart): it
        has heard the answers to all but the last."""
        finds = self.sam.commands.count(FIND)
        wait_until(lambda: self.sam.commands.count(FIND) >= finds + count, what="SAM finds")

    def wait_dropout(self, polls: int) -> None:
        """A dropout of `polls` find polls while the card stays, and wait until the
        reader has found the card again."""
        finds = self.sam.commands.count(FIND)
        self.sam.dropout(polls)
        wait_until(
            lambda: self.sam.dropout_left == 0 and self.sam.commands.count(FIND) > finds + polls,
            what="the dropout to pass",
        )


@pytest.fixture
def kiosk(broker: Mosquitto, tmp_path: Path) -> Iterator[Kiosk]:
    port = free_port()
    printer = PrinterSimulator(tmp_path / "tickets", port=port).start()
    site = one_service_site(tmp_path, port)
    sam = SamSimulator(tmp_path / "sam-K1").start()
    recorder = Recorder(broker.url, "quhao/#", client_id="presence-test-recorder")
    hall_proc = hall_daemon(broker.url, tmp_path / "hall", config=site).launch()
    daemon = Daemon(
        [
            "kiosk",
            "--config",
            str(site),
            "--broker",
            broker.url,
            "--device",
            "kiosk-K1",
            "--state-dir",
            str(tmp_path / "kiosk-state"),  # its offline record (lease numbers)
            "--log-level",
            "DEBUG",
        ],
        tmp_path / "kiosk.log",
        "kiosk kiosk-K1 serving",
    ).launch()  # side by side with the hall
    hall_proc.wait_ready()
    daemon.wait_ready()
    running = Kiosk(tmp_path, daemon, printer, sam, recorder)
    wait_until(lambda: "SAM reader ok" in daemon.log(), what="SAM reader ready")
    yield running
    assert daemon.stop() == 0, daemon.log()
    hall_proc.stop()
    recorder.close()
    printer.close()
    sam.close()


def test_a_card_lying_on_the_sam_reader_through_dropouts_gives_one_ticket(kiosk: Kiosk) -> None:
    kiosk.sam.present(ADULT)
    assert "A001" in kiosk.printer.wait_for_tickets(1)[0].text
    reads = kiosk.reads()
    for polls in (1, 2, 3, 1, 2, 3):  # each well under the 500 ms default (polls are 50 ms)
        kiosk.wait_dropout(polls)
        kiosk.wait_finds(2)  # the card lies there for a couple of polls between dropouts
    wait_until(lambda: kiosk.reads() > reads, what="the card read again after a dropout")
    # Every read again was recognised as the same card (and so gave nothing to the flow).
    wait_until(
        lambda: kiosk.kiosk.log().count("back after a dropout") == kiosk.reads() - reads,
        what="each read after a dropout recognised as the same card",
    )
    assert len(kiosk.printer.tickets) == 1, "a second ticket or a quota slip was printed"
    assert kiosk.issued() == 1 and kiosk.refused() == 0
    log = (kiosk.tmp / "kiosk.log").read_bytes()
    assert b"back after a dropout" in log  # re-read and recognised, nothing about whom
    for secret in (ADULT.id_number, ADULT.name):
        for encoding in ("utf-8", "utf-16-le", "gb18030"):
            assert secret.encode(encoding) not in log


def test_a_card_taken_off_for_longer_than_the_threshold_is_read_again(kiosk: Kiosk) -> None:
    kiosk.sam.present(ADULT)
    kiosk.printer.wait_for_tickets(1)
    kiosk.sam.remove()
    kiosk.wait_finds(12)  # 11 "no card" answers 50 ms apart: longer than card_absent_ms (500 ms)
    kiosk.sam.present(ADULT)
    assert "A002" in kiosk.printer.wait_for_tickets(2)[1].text
    # another citizen's card put down at once, well within the threshold: a new read
    kiosk.sam.remove()
    kiosk.wait_finds(2)  # one "no card" heard: a break, however short
    kiosk.sam.present(OTHER)
    assert "A003" in kiosk.printer.wait_for_tickets(3)[2].text
    wait_until(lambda: kiosk.issued() == 3, what="the third ticket's event")
    assert kiosk.refused() == 0 and len(kiosk.printer.tickets) == 3

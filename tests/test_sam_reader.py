"""The GA 467 SAM reader: its exchange as a pure state machine (kiosk/readers/sam_poller.py),
property-tested with time passed in, and its I/O in an owner loop against the SAM
simulator's pty — a port that goes away and comes back, a damaged answer, a silent SAM.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk import sam
from kiosk.readers.sam_poller import (
    ANSWER_TIMEOUT_S,
    POLL_S,
    RETRY_S,
    Card,
    Health,
    Note,
    Noticed,
    Output,
    SamPoller,
    Send,
)
from kiosk.readers.sam_serial import SamReader
from quhao.devices.cards import CardRead
from quhao.idnumber import with_check
from quhao.owner import OwnerLoop
from simulators.sam import CardHolder, SamSimulator, card_text
from tests.helpers import wait_until

ADULT = CardHolder("李小明", with_check("44010619900101234"), date(1990, 1, 1))
OTHER = CardHolder("陈小红", with_check("44010619920202345"), date(1992, 2, 2), gender="2")


# ---- a SAM module on paper: answers by the standard, faults on demand --------------


def answer(sw3: int, data: bytes = b"") -> bytes:
    return sam.encode(bytes([0, 0, sw3]) + data)


@cache
def base_message(holder: CardHolder) -> bytes:
    return (256).to_bytes(2, "big") + (1024).to_bytes(2, "big") + card_text(holder) + bytes(1024)


@dataclass
class Module:
    """What a SAM module answers to each command, with the card (or none) on it."""

    holder: CardHolder | None = None
    commands: list[tuple[int, int]] = field(default_factory=list)

    def answer(self, frame: bytes) -> bytes:
        bodies = [item for item in sam.Decoder().feed(frame) if isinstance(item, bytes)]
        assert len(bodies) == 1, "one command per write"
        command = (bodies[0][0], bodies[0][1])
        self.commands.append(command)
        if command in (sam.RESET, sam.STATUS):
            return answer(sam.OK)
        if command == sam.FIND_CARD:
            return answer(sam.FOUND, bytes(4)) if self.holder else answer(sam.NO_CARD)
        if command == sam.SELECT_CARD:
            return answer(sam.OK, bytes(8)) if self.holder else answer(0x81)
        if command == sam.READ_BASE:
            return answer(sam.OK, base_message(self.holder)) if self.holder else answer(0x41)
        return answer(0x21)


@dataclass
class Run:
    """The poller driven as the I/O shell drives it: each command answered (or not) by
    the module after `latency`, its bytes arriving in the given chunk sizes; otherwise
    time moves to the poller's deadline."""

    poller: SamPoller
    module: Module
    now: float = 0.0
    cards: list[Card] = field(default_factory=list)
    health: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    noticed: list[float] = field(default_factory=list)
    pending: bytes | None = None  # an answer on its way

    def take(self, outputs: list[Output]) -> None:
        sends = [o for o in outputs if isinstance(o, Send)]
        assert len(sends) <= 1, "one command in flight at a time"
        # A command is the last thing done (a notice may follow the select it goes with).
        commands = [o for o in outputs if not isinstance(o, Noticed)]
        assert sends == commands[-1:] or not sends, "a command is the last thing done"
        for output in outputs:
            if isinstance(output, Noticed):
                assert sends and sends[0].frame == sam.command(sam.SELECT_CARD)
                self.noticed.append(output.at)
            elif isinstance(output, Card):
                self.cards.append(output)
            elif isinstance(output, Health):
                self.health.append(output.state)
            elif isinstance(output, Note):
                self.notes.append(output)
        if sends:
            self.pending = self.module.answer(sends[0].frame)

    def step(
        self, fault: str = "", chunks: tuple[int, ...] = (4096,), latency: float = 0.001
    ) -> None:
        """One answer arrives (with `fault`), or time moves to the deadline."""
        pending, self.pending = self.pending, None
        if pending is None or fault == "lost":
            assert self.poller.deadline is not None
            self.now = max(self.now, self.poller.deadline)
            self.take(self.poller.due(self.now))
            return
        if fault == "damaged":
            spoilt = bytearray(pending)
            spoilt[len(spoilt) // 2] ^= 0x5A
            pending = bytes(spoilt)
        elif fault == "noise":
            pending = b"\x00\xaa\x13" + pending
        self.now += latency
        position = 0
        for size in [*chunks, len(pending)]:
            if position >= len(pending):
                break
            piece = pending[position : position + size]
            position += len(piece)
            self.take(self.poller.received(piece, self.now))


def started(absent_s: float = 0.5) -> Run:
    run = Run(SamPoller(absent_s), Module())
    run.take(run.poller.opened(run.now))
    run.step()  # reset answered
    run.step()  # status answered: polling
    assert run.health == ["ok"]
    return run


# ---- the exchange, pure -------------------------------------------------------------


def test_start_resets_then_asks_status_then_polls_find_at_its_interval() -> None:
    run = started()
    assert run.module.commands == [sam.RESET, sam.STATUS, sam.FIND_CARD]
    run.step()  # "no card"
    assert run.pending is None and run.poller.deadline == pytest.approx(run.now + POLL_S)
    run.step()  # the poll interval passes: the next find
    assert run.module.commands[-1] == sam.FIND_CARD and len(run.module.commands) == 4


@settings(max_examples=100)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=12), st.floats(0.0, 0.5))
def test_a_card_arriving_in_any_chunking_is_read_once_with_its_times(
    chunks: list[int], latency: float
) -> None:
    run = started()
    run.module.holder = ADULT
    for _ in range(40):
        run.step(chunks=tuple(chunks), latency=latency)
    assert len(run.cards) == 1
    card = run.cards[0]
    assert card.identity.id_number == ADULT.id_number and card.identity.name == ADULT.name
    assert card.read_at - card.detected_at == pytest.approx(2 * latency)  # select, read
    assert run.noticed[-1] == card.detected_at  # the kiosk heard of it as the read began
    assert run.module.commands.count(sam.READ_BASE) == 1  # lying there: not read again
    assert ADULT.id_number not in repr(card) and "withheld" in repr(card)


FAULTS = st.sampled_from(["", "", "", "lost", "damaged", "noise"])


@settings(max_examples=150)
@given(
    st.lists(FAULTS, max_size=60),
    st.lists(st.integers(1, 64), min_size=1, max_size=5),
    st.integers(0, 20),
)
def test_lost_damaged_and_noisy_answers_never_give_a_second_read_or_stop_the_polling(
    faults: list[str], chunks: list[int], put_at: int
) -> None:
    """A card lying on the reader (dropouts of the line, not of the card): whatever the
    line does to the answers, at most one read is delivered, and once the line is clean
    again the card is read."""
    run = started(absent_s=1000.0)
    for index, fault in enumerate(faults):
        if index == put_at:
            run.module.holder = ADULT
        run.step(fault, tuple(chunks))
    run.module.holder = ADULT
    for _ in range(12):  # a clean line: find, select, read at most
        run.step(chunks=tuple(chunks))
    assert len(run.cards) == 1
    assert run.health[-1] == "ok" or "fault" in run.health
    if not {"damaged", "noise"} & set(faults):
        assert run.poller.dropped_frames == 0  # lost answers are no damaged frames


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=300).map(lambda data: ("bytes", data)),
            st.sampled_from([b"\x00\x00\x9f", b"\x00\x00\x80", b"\x00\x00\x90", b"\x01"]).map(
                lambda body: ("frame", sam.encode(body))
            ),
            st.floats(0.0, 2.0).map(lambda dt: ("time", dt)),
        ),
        max_size=60,
    )
)
def test_whatever_a_hostile_device_sends_the_poller_keeps_one_command_in_flight(
    steps: list[tuple[str, object]],
) -> None:
    """Noise, frames out of turn, silence: never an exception, never more than one
    command written at a time, never a card without a base message, and always a
    deadline to come back at."""
    poller, now = SamPoller(), 0.0
    outputs = poller.opened(now)
    for kind, value in steps:
        assert poller.deadline is not None and poller.deadline >= now
        assert sum(isinstance(o, Send) for o in outputs) <= 1
        assert not any(isinstance(o, Card) for o in outputs)
        if kind == "time":
            assert isinstance(value, float)
            now += value
            outputs = poller.due(now)
        else:
            assert isinstance(value, bytes)
            outputs = poller.received(value, now)


def test_a_damaged_frame_is_counted_reported_and_the_exchange_tried_again() -> None:
    run = started()
    run.module.holder = ADULT
    run.step("damaged")  # the find answer spoilt
    assert run.poller.dropped_frames >= 1  # its length spoilt: the rest is noise too
    assert any("damaged SAM frame" in note.text for note in run.notes)
    run.step()  # no answer within the timeout: the next poll
    assert run.now == pytest.approx(0.002 + ANSWER_TIMEOUT_S)
    for _ in range(6):
        run.step()
    assert len(run.cards) == 1


def test_a_sam_silent_while_polling_is_a_fault_and_started_again() -> None:
    run = started()
    for _ in range(4):  # two finds unanswered, each followed by the poll interval
        run.step("lost")
    assert run.health == ["ok"]
    run.step("lost")  # the third
    assert run.health == ["ok", "fault"] and run.pending is None
    run.step()  # retry_s later: reset, status, polling again
    run.step()
    run.step()
    assert run.health == ["ok", "fault", "ok"]
    assert run.module.commands[-3:] == [sam.RESET, sam.STATUS, sam.FIND_CARD]


def test_a_stale_answer_while_nothing_is_asked_is_dropped() -> None:
    run = started()
    run.step()  # "no card"; now waiting for the next poll
    assert run.poller.received(answer(sam.FOUND, bytes(4)), run.now) == [
        Note(logging.DEBUG, "dropped a SAM answer nothing waited for")
    ]
    assert not run.cards


def test_a_sam_that_fails_its_status_is_a_fault_and_started_again() -> None:
    poller = SamPoller()
    assert poller.opened(0.0) == [Send(sam.command(sam.RESET))]
    assert poller.due(ANSWER_TIMEOUT_S) == [Send(sam.command(sam.STATUS))]  # reset: no answer
    out = poller.received(answer(0x60), ANSWER_TIMEOUT_S + 0.01)
    assert out == [Health("fault", "SAM status: SAM self-test failed")]
    assert poller.deadline == pytest.approx(ANSWER_TIMEOUT_S + 0.01 + RETRY_S)
    assert poller.due(1.0) == []  # not yet

    def deadline() -> float:
        assert poller.deadline is not None
        return poller.deadline

    assert poller.due(deadline()) == [Send(sam.command(sam.RESET))]
    assert poller.due(deadline()) == [Send(sam.command(sam.STATUS))]  # the SAM silent now
    assert poller.due(deadline()) == [Health("fault", "SAM does not answer status")]


def test_the_port_lost_and_back_keeps_the_card_held() -> None:
    """Silence is not absence: a card read before the port went away is not read again
    when it comes back, until it has been away for absent_s."""
    run = started(absent_s=0.5)
    run.module.holder = ADULT
    for _ in range(6):
        run.step()
    assert len(run.cards) == 1
    run.poller.closed()
    run.pending, run.now = None, run.now + 10.0  # ten seconds without a port
    assert run.poller.deadline is None
    run.take(run.poller.opened(run.now))
    for _ in range(12):
        run.step()
    assert len(run.cards) == 1 and run.module.commands.count(sam.READ_BASE) == 1
    run.module.holder = None  # taken off for longer than absent_s, then another card
    for _ in range(14):
        run.step()
    run.module.holder = OTHER
    for _ in range(6):
        run.step()
    assert [card.identity.name for card in run.cards] == [ADULT.name, OTHER.name]


# ---- the I/O, in an owner loop, against the simulator's pty ----------------------------


@pytest.fixture
def owner() -> Iterator[OwnerLoop]:
    loop = OwnerLoop("test-sam")
    loop.start()
    yield loop
    loop.stop()
    loop.join(5)


def _reader(loop: OwnerLoop, link: Path, reads: list[CardRead], states: list[str]) -> SamReader:
    reader = SamReader(
        f"serial://{link}?baud=115200",
        "test SAM",
        reads.append,
        lambda state, detail: states.append(state),
        absent_s=30.0,
    )
    loop.post(lambda: reader.attach(loop))
    return reader


def test_the_port_going_away_is_reported_reopened_and_a_held_card_still_held(
    tmp_path: Path, owner: OwnerLoop
) -> None:
    link = tmp_path / "sam"
    sim = SamSimulator(link).start()
    reads: list[CardRead] = []
    states: list[str] = []
    reader = _reader(owner, link, reads, states)
    sim.present(ADULT)
    wait_until(lambda: reads, what="the card read")
    sim.close()  # the adapter unplugged
    wait_until(lambda: "offline" in states, what="the port reported lost")
    sim = SamSimulator(link).start()  # plugged in again, the card still on it
    sim.present(ADULT)
    try:
        wait_until(lambda: states[-1] == "ok", what="the SAM back")
        finds = sim.commands.count(sam.FIND_CARD)
        wait_until(lambda: sim.commands.count(sam.FIND_CARD) > finds + 3, what="polling again")
        assert len(reads) == 1 and sim.commands.count(sam.READ_BASE) == 0
        sim.remove()  # a break, then another card: read at once
        finds = sim.commands.count(sam.FIND_CARD)
        wait_until(lambda: sim.commands.count(sam.FIND_CARD) > finds + 1, what="no card")
        sim.present(OTHER)
        wait_until(lambda: len(reads) == 2, what="the other card read")
    finally:
        owner.post(reader.close)
        sim.close()


def test_a_damaged_answer_and_a_silent_sam_on_the_pty(
    tmp_path: Path, owner: OwnerLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quhao.sam")
    link = tmp_path / "sam"
    sim = SamSimulator(link).start()
    reads: list[CardRead] = []
    states: list[str] = []
    reader = _reader(owner, link, reads, states)
    try:
        wait_until(lambda: states == ["ok"], what="the SAM ready")
        sim.fault = "bad_checksum"  # the next answer damaged
        wait_until(lambda: "dropped a damaged SAM frame" in caplog.text, what="the drop logged")
        assert reader.dropped_frames >= 1
        sim.present(ADULT)
        wait_until(lambda: reads, what="the card read after the damaged answer")
        sim.fault = "silent"  # the module stops answering: a fault, not a card taken off
        wait_until(lambda: "fault" in states, timeout=15, what="the silent SAM reported")
        assert "SAM does not answer" in caplog.text and reader.presence.holding
        sim.fault = ""
        wait_until(lambda: states[-1] == "ok", timeout=15, what="the SAM answering again")
        assert len(reads) == 1  # the card lying there all along: not read again
        assert ADULT.id_number not in caplog.text and ADULT.name not in caplog.text
    finally:
        owner.post(reader.close)
        sim.close()

"""GA 467 SAM ID-card reader simulator on a pseudo-terminal.

The device's side of GA 467, written from the standard independently of the
kiosk's codec: frames `AA AA AA 96 69 | LEN(2) | body | XOR`, answers to reset,
status, find, select and read base message, the 256-byte UCS-2LE text of the
card on the reader (resident ID card, J, I and Y cards), and faults:

- `no_card`: nothing on the reader (find → 0x80);
- `bad_checksum`: the next answer goes out with a wrong checksum;
- `read_failure`: reading the card fails (0x41);
- `silent`: answers nothing;
- a radio dropout (`dropout(polls)`): the card stays on the reader, but the next
  `polls` find commands answer "no card" (0x80), as a real reader's field does
  when a card lies at its edge or is nudged.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from dataclasses import dataclass
from datetime import date
from pathlib import Path

HEAD = b"\xaa\xaa\xaa\x96\x69"


@dataclass(frozen=True)
class CardHolder:
    """Who is on the card. Made-up people only: check digits valid, names invented."""

    name: str
    id_number: str
    birth: date
    gender: str = "1"  # 1 male, 2 female
    nation: str = "01"  # 01 汉族
    address: str = "广州市白云区景泰街道示例路1号"
    authority: str = "广州市公安局白云分局"
    valid_from: str = "20200101"
    valid_to: str = "20400101"  # or "长期"
    card_type: str = " "  # " " resident, J, I, Y
    english_name: str = ""
    nationality: str = ""
    pass_number: str = ""


def _field(value: str, width: int) -> str:
    return value[:width].ljust(width)


def card_text(holder: CardHolder) -> bytes:
    """The 256-byte UCS-2LE text a SAM returns for this card."""
    h = holder
    birth = h.birth.strftime("%Y%m%d")
    if h.card_type == "I":
        parts = [
            (h.english_name, 60),
            (h.gender, 1),
            (h.id_number, 15),
            (h.nationality, 3),
            (h.name, 15),
            (h.valid_from, 8),
            (h.valid_to, 8),
            (birth, 8),
            ("02", 2),
            ("1100", 4),
            ("I", 1),
        ]
    elif h.card_type == "Y":
        parts = [
            (h.name, 15),
            (h.gender, 1),
            ("", 2),
            (birth, 8),
            (h.english_name[:35], 35),
            (h.id_number, 18),
            (h.authority, 15),
            (h.valid_from, 8),
            (h.valid_to, 8),
            (h.english_name[35:], 9),
            (h.nationality, 3),
            ("", 2),
            ("Y", 1),
        ]
    elif h.card_type == "J":
        parts = [
            (h.name, 15),
            (h.gender, 1),
            ("", 2),
            (birth, 8),
            (h.address, 35),
            (h.id_number, 18),
            (h.authority, 15),
            (h.valid_from, 8),
            (h.valid_to, 8),
            (h.pass_number, 9),
            ("01", 2),
            ("", 3),
            ("J", 1),
        ]
    else:
        parts = [
            (h.name, 15),
            (h.gender, 1),
            (h.nation, 2),
            (birth, 8),
            (h.address, 35),
            (h.id_number, 18),
            (h.authority, 15),
            (h.valid_from, 8),
            (h.valid_to, 8),
        ]
    text = "".join(_field(value, width) for value, width in parts)
    return text.ljust(128).encode("utf-16-le")


class SamSimulator:
    def __init__(self, link: Path) -> None:
        self.link = link
        self.holder: CardHolder | None = None
        self.fault = ""
        self.commands: list[tuple[int, int]] = []
        # 0: answers are written at once; a baud rate: each answer takes the time a real
        # module's line takes to carry it (a base message, 1,295 bytes: 112 ms at 115200)
        self.line_baud = 0
        self.selected_at = 0.0  # perf_counter: the last select command received
        self.read_answered_at = 0.0  # perf_counter: the last base message all sent
        self.last_frame_at = 0.0
        self._dropout = 0  # find polls still to answer "no card" while the card stays
        self._lock = threading.Lock()
        self._seen = threading.Condition()
        self._empty_finds = 0  # finds answered "no card" since the card was removed
        self.first_empty_at = 0.0  # monotonic: the first of them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fds: tuple[int, int] | None = None

    def start(self) -> SamSimulator:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._fds = (master, slave)
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(os.ttyname(slave))
        self._thread = threading.Thread(
            target=self._serve, args=(master,), daemon=True, name="sim-sam"
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        self.link.unlink(missing_ok=True)
        for fd in self._fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)

    def present(self, holder: CardHolder) -> None:
        self.holder = holder

    def remove(self) -> None:
        with self._seen:
            self.holder = None
            self._empty_finds = 0

    def wait_seen_empty(self, finds: int = 2, timeout: float = 5.0) -> bool:
        """Wait until the reader has polled `finds` times since the card was removed and
        been told there is no card: only then can it tell the next card from this one.
        (It polls every 50 ms of real time; a busy machine can make that much later.)"""
        deadline = time.monotonic() + timeout
        with self._seen:
            while self._empty_finds < finds:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._seen.wait(left)
        return True

    def dropout(self, polls: int) -> None:
        """The card stays on the reader, but the next `polls` find commands answer
        "no card": a brief radio dropout."""
        with self._lock:
            self._dropout = polls

    @property
    def dropout_left(self) -> int:
        """Find polls the current dropout still answers "no card" (0: it is over)."""
        with self._lock:
            return self._dropout

    def _serve(self, master: int) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                buffer += os.read(master, 4096)
            except OSError:
                continue
            while True:
                start = buffer.find(HEAD)
                if start < 0 or len(buffer) < start + 7:
                    break
                del buffer[:start]
                length = int.from_bytes(buffer[5:7], "big")
                if len(buffer) < 7 + length:
                    break
                frame = bytes(buffer[: 7 + length])
                del buffer[: 7 + length]
                check = 0
                for byte in frame[5:-1]:
                    check ^= byte
                reply = self._answer(frame[7:-1]) if check == frame[-1] else self._status(0x10)
                if reply and self.fault != "silent":
                    if self.line_baud:
                        time.sleep(len(reply) * 10 / self.line_baud)  # start, 8 data, stop
                    with contextlib.suppress(OSError):
                        os.write(master, reply)
                    if self.commands and self.commands[-1] == (0x30, 0x01):
                        self.read_answered_at = time.perf_counter()

    def _status(self, sw3: int, data: bytes = b"") -> bytes:
        body = bytes([0, 0, sw3]) + data
        length = (len(body) + 1).to_bytes(2, "big")
        check = 0
        for byte in length + body:
            check ^= byte
        if self.fault == "bad_checksum":
            self.fault = ""  # one damaged answer
            check ^= 0xFF
        return HEAD + length + body + bytes([check])

    def _answer(self, body: bytes) -> bytes:
        if len(body) < 2:
            return self._status(0x11)
        command = (body[0], body[1])
        self.commands.append(command)
        card = self.holder if self.fault != "no_card" else None
        if command in ((0x10, 0xFF), (0x11, 0xFF)):
            return self._status(0x90)
        if command == (0x12, 0xFF):
            return self._status(0x90, bytes(16))
        if command == (0x20, 0x01):
            with self._lock:
                if card and self._dropout > 0:
                    self._dropout -= 1
                    card = None
            if card:
                return self._status(0x9F, bytes(4))
            with self._seen:
                if not self._empty_finds:
                    self.first_empty_at = time.monotonic()
                self._empty_finds += 1
                self._seen.notify_all()
            return self._status(0x80)
        if command == (0x20, 0x02):
            self.selected_at = time.perf_counter()
            return self._status(0x90, bytes(8)) if card else self._status(0x81)
        if command == (0x30, 0x01):
            if card is None:
                return self._status(0x41)
            if self.fault == "read_failure":
                return self._status(0x41)
            photo = bytes(1024)
            return self._status(
                0x90, (256).to_bytes(2, "big") + (1024).to_bytes(2, "big") + card_text(card) + photo
            )
        return self._status(0x21)

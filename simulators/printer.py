"""ESC/POS thermal printer simulator: TCP port 9100 (or any) and a pty.

`Interpreter` is the printer's brain, written from the ESC/POS command reference
(not from python-escpos): text in GB18030 when Chinese mode (FS &) is on, ESC a
alignment, ESC E bold, ESC ! and GS ! sizes, GS ( k QR codes (store + print),
GS V cut, ESC d feed, DLE EOT status answered at once from the paper and cover
state. Every cut closes a ticket, written as a PNG (CJK font) and a transcript.
Random bytes never crash it: an unknown command is skipped and counted.

Fault modes for tests: paper `ok|near_end|out`, cover open, `silent` (answers
no status), and `die_after` (the printer drops dead after that many more bytes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVarTuple

log = logging.getLogger("sim.printer")

Args = TypeVarTuple("Args")

ESC, GS, FS, DLE, LF = 0x1B, 0x1D, 0x1C, 0x10, 0x0A


class NeedMore(Exception):
    pass


@dataclass
class Line:
    text: str
    align: int = 0  # 0 left, 1 center, 2 right
    width: int = 1
    height: int = 1
    bold: bool = False
    qr: str | None = None  # a QR code printed here instead of text


@dataclass
class Ticket:
    lines: list[Line] = field(default_factory=list)
    first_byte_at: float = 0.0  # perf_counter when its first byte arrived
    cut_at: float = 0.0

    @property
    def text(self) -> str:
        return "\n".join(
            f"[QR {line.qr}]" if line.qr is not None else line.text for line in self.lines
        )

    @property
    def qr_codes(self) -> list[str]:
        return [line.qr for line in self.lines if line.qr is not None]


@dataclass
class Panel:
    """What a technician could set on a real printer: paper, cover, faults."""

    paper: str = "ok"  # ok | near_end | out
    cover_open: bool = False
    silent: bool = False  # ignores DLE EOT (a printer that does not answer)
    die_after: int | None = None  # bytes until the printer dies mid-job


class Interpreter:
    def __init__(self, panel: Panel | None = None) -> None:
        self.panel = panel or Panel()
        self.pending = bytearray()
        self.text = bytearray()
        self.current = Ticket()
        self.tickets: list[Ticket] = []
        self.unknown = 0
        self.status_asked: list[float] = []  # perf_counter: each real-time status query
        self._arrival = 0.0
        self._reset()

    def _reset(self) -> None:
        self.align, self.width, self.height, self.bold = 0, 1, 1, False
        self.chinese = False
        self.qr_data = b""

    def status_byte(self, n: int) -> int:
        value = 0x12  # bits 1 and 4 are always set
        if n == 2:
            value |= 0x04 if self.panel.cover_open else 0
            value |= 0x20 if self.panel.paper == "out" else 0
        elif n == 4:
            value |= {"near_end": 0x0C, "out": 0x6C}.get(self.panel.paper, 0)
        elif n == 1 and (self.panel.cover_open or self.panel.paper == "out"):
            value |= 0x08  # offline
        return value

    def feed(self, data: bytes) -> bytes:
        """Consume bytes; returns what the printer answers (status bytes)."""
        self._arrival = time.perf_counter()
        self.pending += data
        answer = bytearray()
        while self.pending:
            try:
                used = self._step(answer)
            except NeedMore:
                break
            del self.pending[:used]
        return bytes(answer)

    def _need(self, n: int) -> None:
        if len(self.pending) < n:
            raise NeedMore

    def _step(self, answer: bytearray) -> int:
        p = self.pending
        byte = p[0]
        if byte != DLE and not self.current.first_byte_at:
            self.current.first_byte_at = self._arrival  # a status query is not the ticket
        if byte == LF:
            self._end_line()
            return 1
        if byte == DLE:
            self._need(3)
            if p[1] == 0x04:
                self.status_asked.append(self._arrival)
                if not self.panel.silent:
                    answer.append(self.status_byte(p[2]))
                return 3
            if p[1] in (0x05, 0x14):  # DLE ENQ n, DLE DC4 fn m t
                return 3 if p[1] == 0x05 else self._skip(5)
            self.unknown += 1
            return 1
        if byte == ESC:
            return self._esc()
        if byte == GS:
            return self._gs()
        if byte == FS:
            return self._fs()
        if byte < 0x20:
            if byte not in (0x0D, 0x09, 0x00):
                self.unknown += 1
            if byte == 0x09:
                self.text += b"    "
            return 1
        self.text.append(byte)
        return 1

    def _skip(self, n: int) -> int:
        self._need(n)
        return n

    def _esc(self) -> int:
        self._need(2)
        command = self.pending[1]
        if command == 0x40:  # ESC @ initialise
            self._reset()
            return 2
        one_arg = {
            0x61,
            0x45,
            0x21,
            0x2D,
            0x4D,
            0x64,
            0x74,
            0x47,
            0x7B,
            0x56,
            0x33,
            0x4A,
            0x52,
            0x20,
            0x63,
        }
        if command in one_arg:
            self._need(3)
            n = self.pending[2]
            if command == 0x61:
                self.align = n - 48 if n >= 48 else n
                self.align = self.align if self.align in (0, 1, 2) else 0
            elif command == 0x45:
                self.bold = bool(n & 1)
            elif command == 0x21:
                self.bold = bool(n & 0x08)
                self.height = 2 if n & 0x10 else 1
                self.width = 2 if n & 0x20 else 1
            elif command == 0x64:
                self._end_line()
                self.current.lines.extend(Line("") for _ in range(max(0, n - 1)))
            return 3
        if command in (0x32, 0x3C):  # ESC 2 default spacing, ESC < return home
            return 2
        if command == 0x2A:  # ESC * m nL nH d… bit image
            self._need(5)
            m, count = self.pending[2], self.pending[3] + 256 * self.pending[4]
            return self._skip(5 + count * (3 if m in (32, 33) else 1))
        self.unknown += 1
        return 2

    def _gs(self) -> int:
        self._need(2)
        command, p = self.pending[1], self.pending
        if command == 0x21:  # GS ! n
            self._need(3)
            self.width = ((p[2] >> 4) & 0x07) + 1
            self.height = (p[2] & 0x07) + 1
            return 3
        if command == 0x56:  # GS V m [n]
            self._need(3)
            length = 4 if p[2] in (65, 66, 97, 98, 103, 104) else 3
            self._need(length)
            self._cut()
            return length
        if command == 0x28:  # GS ( x pL pH …
            self._need(5)
            size = p[3] + 256 * p[4]
            self._need(5 + size)
            if p[2] == 0x6B and size >= 2:
                self._qr(bytes(p[5 : 5 + size]))
            return 5 + size
        if command == 0x76:  # GS v 0 m xL xH yL yH raster image
            self._need(8)
            return self._skip(8 + (p[4] + 256 * p[5]) * (p[6] + 256 * p[7]))
        if command in (0x42, 0x62, 0x48, 0x66, 0x68, 0x77, 0x4C, 0x57, 0x61):
            return self._skip(3 if command not in (0x4C, 0x57) else 4)
        self.unknown += 1
        return 2

    def _qr(self, body: bytes) -> None:
        cn, fn = body[0], body[1]
        if cn != 49:
            return
        if fn == 80 and len(body) >= 3:  # store data (after m)
            self.qr_data = body[3:]
        elif fn == 81:  # print what was stored
            if self.text:
                self._end_line()
            self.current.lines.append(
                Line("", align=self.align, qr=self.qr_data.decode("utf-8", "replace"))
            )

    def _fs(self) -> int:
        self._need(2)
        command = self.pending[1]
        if command == 0x26:  # FS & Chinese mode on
            self.chinese = True
            return 2
        if command == 0x2E:  # FS . off
            self.chinese = False
            return 2
        if command in (0x21, 0x43, 0x57, 0x2D):  # FS ! n, FS C n, FS W n, FS - n
            return self._skip(3)
        self.unknown += 1
        return 2

    def _end_line(self) -> None:
        raw = bytes(self.text)
        self.text.clear()
        text = raw.decode("gb18030" if self.chinese else "cp437", errors="replace")
        self.current.lines.append(Line(text, self.align, self.width, self.height, self.bold))

    def _cut(self) -> None:
        if self.text:
            self._end_line()
        while (
            self.current.lines
            and not self.current.lines[-1].text
            and self.current.lines[-1].qr is None
        ):
            self.current.lines.pop()  # the feed before the cut
        self.current.cut_at = time.perf_counter()
        self.tickets.append(self.current)
        self.current = Ticket()


def render_png(ticket: Ticket, path: Path, paper_px: int = 576) -> None:
    """The ticket as it would come out of an 80 mm printer (576 dots wide)."""
    import qrcode
    from PIL import Image, ImageDraw

    from simulators.render import font

    base = 24
    pieces: list[tuple[Image.Image, int]] = []
    for line in ticket.lines:
        if line.qr is not None:
            code = qrcode.make(line.qr or " ", box_size=6, border=2).get_image().convert("RGB")
            pieces.append((code, 1))
            continue
        size = base * max(line.height, 1)
        face = font(size)
        width = int(face.getlength(line.text)) + 8 if line.text else 1
        image = Image.new("RGB", (max(1, width), size + 8), "white")
        ImageDraw.Draw(image).text(
            (4, 2),
            line.text,
            fill="black",
            font=face,
            stroke_width=1 if line.bold else 0,
            stroke_fill="black",
        )
        pieces.append((image, line.align))
    height = sum(img.height for img, _ in pieces) + 40
    paper = Image.new("RGB", (paper_px, max(height, 100)), "white")
    y = 20
    for img, align in pieces:
        x = {0: 10, 1: (paper_px - img.width) // 2, 2: paper_px - img.width - 10}.get(align, 10)
        paper.paste(img, (max(0, x), y))
        y += img.height
    path.parent.mkdir(parents=True, exist_ok=True)
    paper.save(path)


class PrinterSimulator:
    """One printer on TCP (`port`) and/or a pty (`link`), writing tickets to `out`."""

    def __init__(
        self,
        out: Path | None = None,
        port: int | None = None,
        link: Path | None = None,
        panel: Panel | None = None,
        render: bool = True,
        render_limit: int | None = None,
    ) -> None:
        self.out, self.port, self.link = out, port, link
        self.panel = panel or Panel()
        self.interpreter = Interpreter(self.panel)
        self.render = render
        self.render_limit = render_limit  # draw only the first N tickets (transcripts: all)
        self.lock = threading.Condition()
        self.delivered: list[Ticket] = []
        self._outbox: queue.SimpleQueue[tuple[Ticket, int] | None] = queue.SimpleQueue()
        self.dead = False
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: socket.socket | None = None

    @property
    def tickets(self) -> list[Ticket]:
        """Tickets cut and delivered (their PNG and transcript written)."""
        return list(self.delivered)

    def start(self) -> PrinterSimulator:
        self._spawn(self._writer)
        if self.port is not None:
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", self.port))
            server.listen(4)
            self.port = server.getsockname()[1]
            self._server = server
            self._spawn(self._accept)
        if self.link is not None:
            master, slave = os.openpty()
            tty.setraw(slave)
            self.link.unlink(missing_ok=True)
            self.link.symlink_to(os.ttyname(slave))
            self._pty = (master, slave)
            self._spawn(self._serve_pty, master)
        return self

    def _spawn(self, target: Callable[[*Args], object], *args: *Args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="sim-printer")
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        if self._server:
            self._server.close()
        if self.link is not None:
            self.link.unlink(missing_ok=True)
            for fd in self._pty:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def revive(self) -> None:
        with self.lock:
            self.dead, self.panel.die_after = False, None

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if self.dead:
                conn.close()  # a dead printer: the connection is refused at once
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            self._spawn(self._serve_socket, conn)

    def _serve_socket(self, conn: socket.socket) -> None:
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                answer, alive = self._consume(data)
                if answer:
                    with contextlib.suppress(OSError):
                        conn.sendall(answer)
                if not alive:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                    return

    def _serve_pty(self, master: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:
                continue
            answer, _ = self._consume(data)
            if answer:
                with contextlib.suppress(OSError):
                    os.write(master, answer)

    def _consume(self, data: bytes) -> tuple[bytes, bool]:
        with self.lock:
            if self.dead:
                return b"", False
            alive = True
            if self.panel.die_after is not None:
                if len(data) >= self.panel.die_after:
                    data, alive = data[: self.panel.die_after], False
                    self.dead = True
                else:
                    self.panel.die_after -= len(data)
            before = len(self.interpreter.tickets)
            answer = self.interpreter.feed(data)
            for offset, ticket in enumerate(self.interpreter.tickets[before:]):
                self._outbox.put((ticket, before + offset + 1))
        return answer, alive  # answered at once; pictures are drawn by the writer

    def _writer(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            ticket, index = item
            try:
                self._write(ticket, index)
            except Exception:
                log.exception("could not write ticket %d", index)
            with self.lock:
                self.delivered.append(ticket)
                self.lock.notify_all()

    def _write(self, ticket: Ticket, index: int) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"ticket-{index:04d}.txt").write_text(ticket.text + "\n", encoding="utf-8")
        if self.render and (self.render_limit is None or index <= self.render_limit):
            render_png(ticket, self.out / f"ticket-{index:04d}.png")

    def wait_for_tickets(self, count: int, timeout: float = 10.0) -> list[Ticket]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.interpreter.tickets) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"printer has {len(self.interpreter.tickets)} tickets, "
                        f"expected {count} within {timeout:g} s"
                    )
                self.lock.wait(remaining)
            return list(self.interpreter.tickets)

"""The ticket printer: python-escpos transports chosen by URI, real-time status first.

URIs: `tcp://10.0.0.21:9100`, `serial:///dev/ttyS1?baud=19200`, `usb://0x0416:0x5011`.

A connection is opened per ticket (`session`). Before a ticket is issued the kiosk
asks the printer's real-time status (DLE EOT 2 and 4) on it, sent as soon as a card is
noticed (`PrinterSession.ask`) so that the answer comes while the card is read.
python-escpos's paper_status() reports "adequate" when nothing answers, so the answer
bytes are read here and no answer means no ticket. After the job the status is asked
again on the same connection: an answer proves the printer was alive to the end, and
paper that ran out during the job means the ticket is not whole.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time

from escpos.escpos import Escpos
from escpos.exceptions import Error as EscposError

from kiosk.escpos_status import DLE_EOT_OFFLINE, DLE_EOT_PAPER, PrinterState, decode
from quhao.devices import uri as uris

log = logging.getLogger("quhao.printer")

ANSWER_TIMEOUT_S = 1.0


class PrinterError(RuntimeError):
    pass


class TicketPrinter:
    def __init__(self, uri: str, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        self.uri = uris.parse(uri, ("tcp", "serial", "usb"))
        self.timeout_s = timeout_s

    def _open(self) -> Escpos:
        u = self.uri
        if u.scheme == "tcp":
            from escpos.printer import Network

            printer = Network(u.host, u.port or 9100, timeout=self.timeout_s)
            printer.open()
            with contextlib.suppress(OSError):
                printer.device.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return printer
        if u.scheme == "serial":
            from escpos.printer import Serial

            printer = Serial(
                devfile=u.path, baudrate=u.int_param("baud", 19200), timeout=self.timeout_s
            )
            printer.open()
            return printer
        from escpos.printer import Usb

        vendor, _, product = (u.host or u.path.strip("/")).partition(":")
        printer = Usb(int(vendor, 16), int(product, 16), timeout=int(self.timeout_s * 1000))
        printer.open()
        return printer

    def status(self) -> PrinterState:
        try:
            printer = self._open()
        except (EscposError, OSError) as exc:
            return PrinterState("offline", f"cannot reach the printer: {exc}")
        try:
            return self._query(printer)
        finally:
            _close(printer)

    def session(self) -> PrinterSession:
        """One connection for one ticket: its status asked once before the hall is asked,
        the job and the proof that it printed whole sent on the same connection."""
        try:
            return PrinterSession(self, self._open())
        except (EscposError, OSError) as exc:
            return PrinterSession(self, None, f"cannot reach the printer: {exc}")

    def print_job(self, job: bytes) -> PrinterState:
        """Send a whole ticket; the state afterwards says whether it printed whole."""
        try:
            printer = self._open()
        except (EscposError, OSError) as exc:
            return PrinterState("offline", f"cannot reach the printer: {exc}")
        try:
            before = self._query(printer)
            if not before.can_print:
                return before
            try:
                printer._raw(job)
            except (EscposError, OSError) as exc:
                return PrinterState("offline", f"printer lost during the job: {exc}")
            after = self._query(printer)
            if after.state == "out":
                return PrinterState("out", "paper ran out during the ticket")
            return after
        finally:
            _close(printer)

    def _query(self, printer: Escpos) -> PrinterState:
        return self._ask(printer) or self._answer(printer)

    def _ask(self, printer: Escpos) -> PrinterState | None:
        """Send the status query; a state only when it could not be sent."""
        try:
            printer._raw(DLE_EOT_OFFLINE + DLE_EOT_PAPER)
        except TimeoutError:
            return decode(None, None)
        except (EscposError, OSError) as exc:
            return PrinterState("offline", f"printer lost: {exc}")
        return None

    def _answer(self, printer: Escpos) -> PrinterState:
        """Read the status query's answer (the two bytes, or what came in the timeout)."""
        try:
            answer = b""
            deadline = time.monotonic() + self.timeout_s
            while len(answer) < 2 and (left := deadline - time.monotonic()) > 0:
                chunk = self._read(printer, 2 - len(answer), left)
                if not chunk and self.uri.scheme == "tcp":
                    return PrinterState("offline", "the printer closed the connection")
                answer += bytes(chunk or b"")
        except TimeoutError:
            answer = b""
        except (EscposError, OSError) as exc:
            return PrinterState("offline", f"printer lost: {exc}")
        if len(answer) < 2:
            return decode(None, None)
        return decode(answer[-2], answer[-1])

    def _read(self, printer: Escpos, wanted: int, left: float) -> bytes:
        """What has come of the answer, returning as soon as `wanted` bytes are in."""
        if self.uri.scheme == "serial":
            # python-escpos's Serial._read asks pyserial for 16 bytes, and pyserial waits
            # for all 16 or the whole timeout: the 2-byte answer would always cost 1 s.
            port = printer.device
            port.timeout = left
            return bytes(port.read(wanted))
        return bytes(printer._read() or b"")  # TCP, USB: whatever has arrived


class PrinterSession:
    def __init__(self, owner: TicketPrinter, printer: Escpos | None, problem: str = "") -> None:
        self.owner, self.printer, self.problem = owner, printer, problem
        self._asked = False  # the status query is out; its answer not yet read
        self._ask_failed: PrinterState | None = None

    def ask(self) -> None:
        """Send the status query now; `status` reads the answer. Asked while a card is
        being read, the printer answers meanwhile and `status` finds the answer waiting."""
        if self.printer is not None and not self._asked:
            self._asked = True
            self._ask_failed = self.owner._ask(self.printer)

    def status(self) -> PrinterState:
        if self.printer is None:
            return PrinterState("offline", self.problem)
        self.ask()
        self._asked = False
        return self._ask_failed or self.owner._answer(self.printer)

    def print_job(self, job: bytes) -> PrinterState:
        """Send the ticket (its status was just asked); the state after says if it is whole."""
        if self.printer is None:
            return PrinterState("offline", self.problem)
        try:
            self.printer._raw(job)
        except (EscposError, OSError) as exc:
            return PrinterState("offline", f"printer lost during the job: {exc}")
        after = self.owner._query(self.printer)
        if after.state == "out":
            return PrinterState("out", "paper ran out during the ticket")
        return after

    def close(self) -> None:
        if self.printer is not None:
            _close(self.printer)
            self.printer = None


def _close(printer: Escpos) -> None:
    with contextlib.suppress(Exception):
        printer.close()

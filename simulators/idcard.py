"""Virtual ID card for PC/SC: pcscd + vsmartcard-vpcd + a card answering vpcd.

vpcd is a pcscd reader driver that listens on a TCP port; a virtual card
"is inserted" by connecting to it and "removed" by disconnecting. Framing:
2-byte big-endian length, then either one control byte (0 power off, 1 power
on, 2 reset, 4 ATR request) or a command APDU, answered with the response APDU.

The card answers `00 36 00 00 08` (the second-generation ID card's serial number)
and `FF CA 00 00 00` with its 8-byte UID.

A radio dropout (`VirtualIdCard.dropout`) is the card leaving the reader and
coming back a moment later: pcscd, which asks vpcd every 400 ms, then reports the
reader EMPTY for one of its polls (or two, for a longer dropout) while the card
has in effect stayed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from quhao.processes import stop as stop_process

log = logging.getLogger("sim.idcard")

DEFAULT_VPCD_PORT = 0x8C7B  # 35963, as in Debian's /etc/reader.conf.d/vpcd
ATR = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")  # two slots: ports p and p + 1
MACHINE_SOCKET = Path("/run/pcscd/pcscd.comm")  # where pcscd listens unless handed a socket
SOCKET_ENV = "PCSCLITE_CSOCK_NAME"  # pcsc-lite's clients look for pcscd here when it is set
PORT_ENV = "QUHAO_VPCD_PORT"  # the vpcd port of the pcscd that SOCKET_ENV names


class PcscStack:
    """pcscd with one vpcd entry (two virtual readers on ports p and p + 1).

    The machine's pcscd by default: pcscd always creates /run/pcscd/pcscd.comm itself,
    so a machine has one such pcscd; if it is running it is used as it is (with Debian's
    vpcd entry on port 35963), otherwise one is started with a private reader.conf.d.

    A private stack (`socket_path` given, or named by PCSCLITE_CSOCK_NAME in the environment,
    as each test worker does) runs beside any other: the listening socket is made here
    and handed to pcscd the way systemd does (socket activation), so pcscd neither
    creates nor checks the machine's socket. pcsc-lite's clients reach it through
    PCSCLITE_CSOCK_NAME. Its vpcd port is `port`, else QUHAO_VPCD_PORT, else 35963.
    If a pcscd already answers on that socket, it is used as it is.
    """

    def __init__(
        self, workdir: Path, port: int | None = None, socket_path: Path | None = None
    ) -> None:
        named = os.environ.get(SOCKET_ENV)
        self.socket = socket_path or (Path(named) if named else None)
        self.workdir = workdir
        self.port = port or int(os.environ.get(PORT_ENV) or DEFAULT_VPCD_PORT)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PcscStack:
        if _answers(self.socket or MACHINE_SOCKET):
            log.info("using the pcscd already running on %s", self.socket or MACHINE_SOCKET)
            return self
        binary = shutil.which("pcscd") or "/usr/sbin/pcscd"
        conf = self.workdir / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:0x{self.port:04X}\n"
            "LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\n"
            f"CHANNELID    0x{self.port:04X}\n"
        )
        log_file = (self.workdir / "pcscd.log").open("ab")
        command = [binary, "-f", "-c", str(conf)]
        if self.socket is None:
            self.proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        else:
            listener = _listening_socket(self.socket)
            # systemd's protocol: the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID = pcscd's
            # own pid, which only the shell that execs it knows.
            handover = 'exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", handover, "pcscd", *command],
                stdin=listener.fileno(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            listener.close()
        log_file.close()
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pcscd did not start; see {self.workdir / 'pcscd.log'}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        self.proc = None


def free_vpcd_port() -> int:
    """A port p with p and p + 1 free on loopback (vpcd's two readers), below Linux's
    ephemeral range as quhao.broker.free_ports takes them."""
    while True:
        port = random.randrange(20000, 32000, 2)
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def _listening_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # left by a pcscd of this stack that was stopped
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o666)  # as pcscd makes its own: any local user's programs may ask it
    listener.listen(128)
    return listener


def _answers(path: Path) -> bool:
    """A pcscd listens on this socket."""
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
    ):
        probe.connect(str(path))
        return True
    return False


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


class VirtualIdCard:
    """A card that can be put on (insert) and taken off (remove) a vpcd reader slot."""

    def __init__(self, port: int = DEFAULT_VPCD_PORT, slot: int = 0) -> None:
        self.port = port + slot
        self.uid = b""
        self.apdus = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.inserted_at = 0.0

    def insert(self, uid: str) -> None:
        """Put the card with this UID (hex) on the reader."""
        self.remove()
        self.uid = bytes.fromhex(uid)
        sock = socket.create_connection(("127.0.0.1", self.port), 5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self._sock = sock
        self.inserted_at = time.perf_counter()
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True, name="vicc")
        self._thread.start()

    def dropout(self, seconds: float = 0.05) -> None:
        """The card drops off the reader for `seconds` and comes back, the same card.
        Returns once it is back."""
        uid = self.uid.hex()
        self.remove()
        time.sleep(seconds)
        self.insert(uid)

    def remove(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError, EOFError):
            while True:
                size = struct.unpack(">H", _read_exactly(sock, 2))[0]
                message = _read_exactly(sock, size)
                if size == 1:
                    if message[0] == 4:  # ATR request
                        sock.sendall(struct.pack(">H", len(ATR)) + ATR)
                    continue  # power on/off/reset need no answer
                self.apdus += 1
                sock.sendall(_framed(self._answer(message)))

    def _answer(self, apdu: bytes) -> bytes:
        if apdu[:4] in (bytes([0x00, 0x36, 0x00, 0x00]), bytes([0xFF, 0xCA, 0x00, 0x00])):
            return self.uid + b"\x90\x00"
        if apdu[:2] == b"\x00\xa4":  # SELECT: nothing to select on this card
            return b"\x6a\x82"
        return b"\x6d\x00"  # instruction not supported


def _framed(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        # vpcd writes length and APDU separately without TCP_NODELAY: acknowledging at once
        # keeps Nagle from holding the APDU back for a delayed-ACK period (~40 ms).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

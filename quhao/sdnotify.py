"""systemd's notify protocol, by hand: datagrams to $NOTIFY_SOCKET. A no-op elsewhere.

`Notifier.ready()` after start-up, `status(text)` when something worth showing in
`systemctl status` changes, and a watchdog thread that sends WATCHDOG=1 every
half WatchdogSec — but only while every registered loop has beaten recently, so a
daemon whose loop is stuck stops petting the watchdog and systemd restarts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("quhao.sdnotify")


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self.address = address
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else 0.0
        if os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
            self.watchdog_s = 0.0  # meant for another process
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if address else None
        self._heartbeats: dict[str, Callable[[], float]] = {}
        self._stop = threading.Event()

    def send(self, message: str) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._sock.sendto(message.encode(), self.address)

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1")
        self._stop.set()

    def watch(self, name: str, heartbeat: Callable[[], float]) -> None:
        """A loop to watch: heartbeat() is the monotonic time it last went round."""
        self._heartbeats[name] = heartbeat

    def start_watchdog(self) -> None:
        if not self.watchdog_s or self._sock is None:
            return
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        while not self._stop.wait(self.watchdog_s / 2):
            now = time.monotonic()
            stuck = [n for n, beat in self._heartbeats.items() if now - beat() > self.watchdog_s]
            if stuck:
                log.error("loop stuck: %s; not petting the watchdog", ", ".join(stuck))
                continue
            self.send("WATCHDOG=1")

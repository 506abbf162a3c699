"""One owner per daemon: a single thread that owns all of a device daemon's state.

The owner thread selects over file descriptors itself — the MQTT socket, a keypad,
an LED display's serial port — and runs their handlers at once, so a key press
reaches the hall and the hall's answer reaches the LED without crossing a thread.
Timers (a notice that ends, a request to retry, a flow that times out) are entries
in one heap, not threads. Only devices whose drivers must block (a PC/SC reader
waiting in SCardGetStatusChange, a serial reader with its own polling cadence) get
a thread of their own, and those threads only `post` to the owner's inbox; the
post wakes the select through an eventfd.

Nothing here knows what a kiosk or a counter is; see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from quhao.mqtt import Bus

log = logging.getLogger("quhao.owner")

Handler = Callable[[], None]
MAX_WAIT_S = 0.5  # the longest select: the watchdog heartbeat moves at least this often


@dataclass(order=True)
class Timer:
    """A call due at `when` (the loop's monotonic clock). Cancel it with `cancel()`."""

    when: float
    seq: int
    action: Handler = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class OwnerLoop:
    def __init__(self, name: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.monotonic = monotonic
        self.heartbeat = monotonic()  # the loop's last round, for the systemd watchdog
        self._readers: dict[int, Handler] = {}
        self._writers: list[Callable[[], tuple[int, Handler] | None]] = []
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._inbox: queue.SimpleQueue[Handler] = queue.SimpleQueue()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Held while the eventfd is written or closed: a device thread posting as the loop
        # ends must not write to a closed descriptor (or to another file given its number).
        self._wake_lock = threading.Lock()
        self._wake_open = True
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    # ---- what other threads may call ----------------------------------------

    def post(self, action: Handler) -> None:
        """Run `action` in the owner thread, soon. The only way in from another thread.
        Once the loop has ended, what is posted is dropped: there is nobody to run it."""
        self._inbox.put(action)
        self._wake_up()

    def stop(self) -> None:
        self._stop.set()
        self._wake_up()

    def _wake_up(self) -> None:
        with self._wake_lock:
            if self._wake_open:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_write(self._wake, 1)

    @property
    def stopping(self) -> threading.Event:
        """Set when the loop is asked to stop: device threads watch it to end too."""
        return self._stop

    # ---- what the owner thread calls ----------------------------------------

    def watch(self, fd: int, on_readable: Handler) -> None:
        self._readers[fd] = on_readable

    def unwatch(self, fd: int) -> None:
        self._readers.pop(fd, None)

    def watch_writes(self, wants: Callable[[], tuple[int, Handler] | None]) -> None:
        """`wants()` is asked every round: an fd with data waiting to go out, and what
        to call once it can take more; None when nothing waits."""
        self._writers.append(wants)

    def call_later(self, delay: float, action: Handler) -> Timer:
        timer = Timer(self.monotonic() + max(0.0, delay), next(self._seq), action)
        heapq.heappush(self._timers, timer)
        return timer

    def every(self, interval: float, action: Handler) -> None:
        """Call `action` every `interval` seconds from now on, for the loop's life."""

        def again() -> None:
            self.call_later(interval, again)
            action()

        self.call_later(interval, again)

    # ---- the loop ------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = self.monotonic()
            self._round()
        with self._wake_lock:
            self._wake_open = False
            os.close(self._wake)

    def _round(self) -> None:
        wait = MAX_WAIT_S
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0].when - self.monotonic()))
        readers = dict(self._readers)
        writers: dict[int, Handler] = {}
        for wants in self._writers:
            pending = wants()
            if pending is not None:
                writers[pending[0]] = pending[1]
        try:
            readable, writable, _ = select.select([self._wake, *readers], list(writers), [], wait)
        except (OSError, ValueError):
            readable, writable = self._drop_dead(readers), []
        if self._wake in readable:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake)
        for fd in writable:
            self._run(writers[fd])
        for fd in readable:
            if fd != self._wake and fd in self._readers:
                self._run(self._readers[fd])
        while True:
            try:
                action = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._run(action)
        now = self.monotonic()
        while self._timers and self._timers[0].when <= now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._run(timer.action)

    def _drop_dead(self, readers: dict[int, Handler]) -> list[int]:
        """A closed fd left watched: find it, stop watching it, carry on."""
        for fd in readers:
            try:
                os.fstat(fd)
            except OSError:
                log.warning("%s: fd %d closed while watched; dropped", self.name, fd)
                self.unwatch(fd)
        return []

    def _run(self, action: Handler) -> None:
        try:
            action()
        except Exception:  # one failed handler must not stop the owner of everything
            log.exception("%s: handler failed", self.name)


class BusDriver:
    """Drives a `Bus` (paho) from the owner loop: no network thread.

    The socket is watched for reads; pending output is written when the socket can
    take it; keepalives and reconnects run on the loop's timers. Every MQTT callback
    therefore runs in the owner thread, and a publish from it goes straight to the socket.
    """

    RECONNECT_S = 1.0

    def __init__(self, loop: OwnerLoop, bus: Bus) -> None:
        self.loop, self.bus = loop, bus
        self.client: paho.Client = bus.client
        self._watched: int | None = None
        self._next_reconnect = 0.0

    def start(self, connect_timeout: float = 2.0) -> None:
        """Connect (waiting up to `connect_timeout` at start), then hand I/O to the loop."""
        self.client.connect_timeout = 1.0
        self.bus.connect_inline(connect_timeout, required=False)
        self.loop.watch_writes(self._wants_write)
        self.loop.every(1.0, self._misc)
        self._rewatch()

    def _rewatch(self) -> None:
        sock = self.client.socket()
        fd = sock.fileno() if sock is not None else None
        if fd == self._watched:
            return
        if self._watched is not None:
            self.loop.unwatch(self._watched)
        self._watched = fd
        if fd is not None and fd >= 0:
            self.loop.watch(fd, self._readable)

    def _readable(self) -> None:
        rc = self.client.loop_read()
        if rc != paho.MQTT_ERR_SUCCESS:
            self._lost(rc)
        self._rewatch()

    def _wants_write(self) -> tuple[int, Handler] | None:
        sock = self.client.socket()
        if sock is None or not self.client.want_write():
            return None
        return sock.fileno(), self._writable

    def _writable(self) -> None:
        rc = self.client.loop_write()
        if rc != paho.MQTT_ERR_SUCCESS:
            self._lost(rc)

    def _misc(self) -> None:
        """Keepalive pings, and reconnecting after a lost connection."""
        if self.client.socket() is not None:
            rc = self.client.loop_misc()
            if rc == paho.MQTT_ERR_SUCCESS:
                return
            self._lost(rc)
        if self.loop.monotonic() < self._next_reconnect:
            return
        self._next_reconnect = self.loop.monotonic() + self.RECONNECT_S
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning(
                "reconnect to %s:%s failed: %s", self.bus.broker.host, self.bus.broker.port, exc
            )
        self._rewatch()

    def _lost(self, rc: Any) -> None:
        log.debug("MQTT connection lost (%s)", rc)
        if self._watched is not None:
            self.loop.unwatch(self._watched)
            self._watched = None

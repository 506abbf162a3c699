"""A `quhao.mqtt.Bus` driven by the asyncio loop: no network thread.

paho tells us when its socket opens and closes and when it has output waiting; the
loop watches the socket for reads (`add_reader`) and, while output waits, for writes
(`add_writer`); keepalives and reconnects run every second on the loop. So every MQTT
callback runs in the event loop itself — the screens daemon's one owner — and a
publish from a handler goes straight to the socket (what `quhao.owner.BusDriver` does
for the select-based daemons).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from quhao.mqtt import Bus

log = logging.getLogger("quhao.screens.mqtt")

MAX_PACKETS = 64  # read what arrived together in one go (a call's state and events)
MISC_S = 1.0  # keepalive and reconnect cadence
CONNECT_TIMEOUT_S = 1.0  # a reconnect's TCP connect blocks the loop at most this long


class AsyncBus:
    def __init__(self, bus: Bus, on_link: Callable[[bool], None] | None = None) -> None:
        self.bus = bus
        self.client: paho.Client = bus.client
        self.on_link = on_link  # told of every connect (True) and loss (False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        self._next_reconnect = 0.0
        self._stopping = False
        tune = self.client.on_socket_open  # the Bus sets TCP_NODELAY here

        def opened(client: paho.Client, userdata: Any, sock: Any) -> None:
            if tune is not None:
                tune(client, userdata, sock)
            self._opened(sock)

        self.client.on_socket_open = opened
        self.client.on_socket_close = lambda c, u, s: self._closed(s)
        self.client.on_socket_register_write = lambda c, u, s: self._want_write(s, True)
        self.client.on_socket_unregister_write = lambda c, u, s: self._want_write(s, False)
        self.client.connect_timeout = CONNECT_TIMEOUT_S
        self.bus.on_connect(lambda: self._link(True))
        disconnected = self.client.on_disconnect

        def on_disconnect(*args: Any) -> None:
            if disconnected is not None:
                disconnected(*args)
            self._link(False)

        self.client.on_disconnect = on_disconnect

    def start(self) -> None:
        """Connect (or keep trying, every second, from the loop)."""
        self._loop = asyncio.get_running_loop()
        broker = self.bus.broker
        self.client.connect_async(broker.host, broker.port, keepalive=15)
        self._reconnect()
        self._misc = self._loop.create_task(self._keep_alive())

    async def stop(self) -> None:
        self._stopping = True
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
        if self.client.socket() is not None:
            self.bus.stop()  # a clean DISCONNECT, written at once (no network thread)
        if self._sock is not None:
            self._closed(self._sock)

    @property
    def connected(self) -> bool:
        return self.bus.connected.is_set()

    # ---- paho's socket callbacks ------------------------------------------

    def _opened(self, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        self._loop.add_reader(sock, self._readable)

    def _closed(self, sock: Any) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None

    def _want_write(self, sock: Any, wanted: bool) -> None:
        if self._loop is None:
            return
        if wanted:
            self._loop.add_writer(sock, self._writable)
        else:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

    def _readable(self) -> None:
        rc = self.client.loop_read(MAX_PACKETS)
        if rc != paho.MQTT_ERR_SUCCESS:
            log.debug("MQTT read: %s", rc)

    def _writable(self) -> None:
        rc = self.client.loop_write()
        if rc != paho.MQTT_ERR_SUCCESS:
            log.debug("MQTT write: %s", rc)

    def _link(self, up: bool) -> None:
        if self.on_link is not None and not self._stopping:
            self.on_link(up)

    # ---- keepalive and reconnect --------------------------------------------

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(MISC_S)
            alive = self.client.socket() is not None
            if alive and self.client.loop_misc() == paho.MQTT_ERR_SUCCESS:
                continue
            self._reconnect()

    def _reconnect(self) -> None:
        assert self._loop is not None
        if self._stopping or self._loop.time() < self._next_reconnect:
            return
        self._next_reconnect = self._loop.time() + MISC_S
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning(
                "MQTT connection to %s:%s as %s failed: %s; retrying",
                self.bus.broker.host,
                self.bus.broker.port,
                self.bus.client_id,
                exc,
            )

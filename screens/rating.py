"""Touch ratings from a window screen, sent to the hall as that window's rater.

Window n's screen is its own device, `rater-W{n}`: the broker lets that user publish
only `hall/req/rater-W{n}/rate` and the hall takes from it only a rating of a ticket
finished at window n. The daemon holds the raters' credentials (`quhao broker gen`
writes them like every device's) and logs in as a window's rater the first time its
screen sends a rating, then keeps that connection. Requests follow the contract: one
rid per touch, kept through retries (`[devices] hall_timeout_ms`, `hall_attempts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from pathlib import Path
from typing import Any

from quhao.config import SiteConfig
from quhao.messages import RateRequest, encode
from quhao.mqtt import Bus, Message, credentials
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object
from screens.mqttio import AsyncBus

log = logging.getLogger("quhao.screens.rating")


class RaterUnavailable(Exception):
    """The rating could not reach the hall (no connection, no answer)."""


class Rater:
    """One window's rater connection."""

    def __init__(
        self, config: SiteConfig, window: int, broker: str, credentials_dir: Path | None
    ) -> None:
        self.config, self.window = config, window
        self.device = f"rater-W{window}"
        self.topics = Topics(config.site.id)
        password, tls = credentials(credentials_dir, self.device)
        bus = Bus(broker, self.device, username=self.device, password=password, tls=tls)
        self.linked = asyncio.Event()
        self.bus = AsyncBus(bus, lambda up: self.linked.set() if up else self.linked.clear())
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._counter = itertools.count(1)
        bus.subscribe(self.topics.reply(self.device), self._on_reply)
        self.bus.start()

    async def rate(self, ticket: str, level: int, reason: str) -> dict[str, Any]:
        """The hall's answer to one rating, or RaterUnavailable."""
        request = RateRequest(ticket=ticket, level=level, reason=reason or None)
        body = {**encode(request), "rid": uuid.uuid4().hex}
        correlation = f"{self.device}:{next(self._counter)}".encode()
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = answer
        devices = self.config.devices
        try:
            # the first rating of a window waits for its rater to log in
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.linked.wait(), devices.hall_timeout_s)
            for _ in range(devices.hall_attempts):
                if self.bus.connected:
                    self.bus.bus.publish(
                        self.topics.request(self.device, "rate"),
                        body,
                        response_topic=self.topics.reply(self.device),
                        correlation=correlation,
                        expiry_s=max(1, int(devices.hall_timeout_s * devices.hall_attempts)),
                    )
                try:
                    return await asyncio.wait_for(asyncio.shield(answer), devices.hall_timeout_s)
                except TimeoutError:
                    continue
            raise RaterUnavailable(f"no answer from the hall to {self.device}'s rating")
        finally:
            self._pending.pop(correlation, None)

    def _on_reply(self, message: Message) -> None:
        waiter = self._pending.get(message.correlation or b"")
        if waiter is None or waiter.done():
            return  # a late duplicate
        try:
            waiter.set_result(decode_object(message.payload))
        except BadPayload as exc:
            log.warning("%s: unreadable answer from the hall: %s", self.device, exc)

    async def close(self) -> None:
        await self.bus.stop()


class Raters:
    """The raters of the windows this daemon serves, each connected on first use."""

    def __init__(self, config: SiteConfig, broker: str, credentials_dir: Path | None) -> None:
        self.config, self.broker, self.credentials_dir = config, broker, credentials_dir
        chosen = config.screens.rating_windows or tuple(config.windows)
        self.windows = frozenset(n for n in chosen if n in config.windows)
        self._raters: dict[int, Rater] = {}

    def get(self, window: int) -> Rater:
        if window not in self.windows:
            raise KeyError(window)
        rater = self._raters.get(window)
        if rater is None:
            rater = self._raters[window] = Rater(
                self.config, window, self.broker, self.credentials_dir
            )
        return rater

    async def close(self) -> None:
        for rater in self._raters.values():
            await rater.close()

"""Request/response to the hall over MQTT v5 (ResponseTopic + CorrelationData).

A request keeps one `rid` through all its retries, so a slow answer followed
by a retry never makes two tickets: the hall answers a repeated rid with the
response it stored the first time.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quhao.messages import ActionRequest, encode
from quhao.mqtt import Bus, Message
from quhao.owner import OwnerLoop, Timer
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object


class HallUnavailable(TimeoutError):
    """No answer from the hall after every retry."""


class HallClient:
    def __init__(self, bus: Bus, topics: Topics, device: str) -> None:
        self.bus, self.topics, self.device = bus, topics, device
        self._pending: dict[bytes, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        bus.subscribe(topics.reply(device), self._on_reply)

    @staticmethod
    def new_rid() -> str:
        return uuid.uuid4().hex

    def request(
        self,
        action: str,
        payload: dict[str, Any] | None = None,
        *,
        rid: str | None = None,
        timeout: float = 2.0,
        attempts: int = 3,
    ) -> dict[str, Any]:
        body = dict(payload or {})
        body["rid"] = rid or body.get("rid") or self.new_rid()
        correlation = f"{self.device}:{next(self._counter)}".encode()
        done: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
        with self._lock:
            self._pending[correlation] = done
        try:
            for _ in range(attempts):
                self.bus.publish(
                    self.topics.request(self.device, action),
                    body,
                    response_topic=self.topics.reply(self.device),
                    correlation=correlation,
                    expiry_s=max(1, int(timeout * attempts)),
                )
                if done[0].wait(timeout):
                    return done[1][0]
            raise HallUnavailable(
                f"no answer to {action} (rid {body['rid']}) "
                f"after {attempts} attempts of {timeout:g} s"
            )
        finally:
            with self._lock:
                self._pending.pop(correlation, None)

    def _on_reply(self, message: Message) -> None:
        with self._lock:
            waiter = self._pending.get(message.correlation or b"")
        if waiter is None or waiter[0].is_set():
            return  # a late duplicate answer to a retried request
        try:
            response = decode_object(message.payload)
        except BadPayload:
            return
        waiter[1].append(response)
        waiter[0].set()


class HallRequests:
    """Requests to the hall from a daemon's owner loop: never blocking, answered by callback.

    `send` publishes at once and returns; the answer (the bus is driven by the same
    loop) or the last timeout calls back in the owner thread. Like `HallClient`, a
    request keeps one rid through all its attempts.
    """

    def __init__(
        self,
        loop: OwnerLoop,
        bus: Bus,
        topics: Topics,
        device: str,
        *,
        timeout_s: float = 2.0,
        attempts: int = 3,
    ) -> None:
        self.loop, self.bus, self.topics, self.device = loop, bus, topics, device
        self.timeout_s, self.attempts = timeout_s, attempts
        self._pending: dict[bytes, _InFlight] = {}
        self._counter = itertools.count(1)
        bus.subscribe(topics.reply(device), self._on_reply)

    def send(
        self,
        request: ActionRequest,
        on_answer: Callable[[dict[str, Any]], None],
        on_unavailable: Callable[[str], None],
        *,
        rid: str | None = None,
    ) -> None:
        """Publish a request (a model of the wire contract) now; one callback later."""
        action = request.action
        body = encode(request)
        body["rid"] = rid or body.get("rid") or HallClient.new_rid()
        correlation = f"{self.device}:{next(self._counter)}".encode()
        flight = _InFlight(action, body, correlation, on_answer, on_unavailable)
        self._pending[correlation] = flight
        self._attempt(flight)

    def _attempt(self, flight: _InFlight) -> None:
        if flight.attempt >= self.attempts:
            self._pending.pop(flight.correlation, None)
            flight.on_unavailable(
                f"no answer to {flight.action} (rid {flight.body['rid']}) "
                f"after {self.attempts} attempts of {self.timeout_s:g} s"
            )
            return
        flight.attempt += 1
        self.bus.publish(
            self.topics.request(self.device, flight.action),
            flight.body,
            response_topic=self.topics.reply(self.device),
            correlation=flight.correlation,
            expiry_s=max(1, int(self.timeout_s * self.attempts)),
        )
        flight.timer = self.loop.call_later(self.timeout_s, lambda: self._attempt(flight))

    def _on_reply(self, message: Message) -> None:
        flight = self._pending.get(message.correlation or b"")
        if flight is None:
            return  # a late duplicate answer to a retried request
        try:
            response = decode_object(message.payload)
        except BadPayload:
            return
        del self._pending[flight.correlation]
        if flight.timer is not None:
            flight.timer.cancel()
        flight.on_answer(response)


@dataclass
class _InFlight:
    action: str
    body: dict[str, Any]
    correlation: bytes
    on_answer: Callable[[dict[str, Any]], None]
    on_unavailable: Callable[[str], None]
    attempt: int = 0
    timer: Timer | None = None

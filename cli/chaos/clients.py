"""Raw MQTT v5 request clients for the chaos run: kiosks and counters as processes.

They speak the wire contract with paho directly (not through `quhao.mqtt`, which is under
test too), building their requests from its models (`quhao.messages`): one `rid` per
intent, kept through every retry — after a timeout, a `unavailable` or a `rate_limited`
— until a final answer comes. Every answer that arrives, late duplicates included, is
appended to the device's record file as one JSON line, so the checker can verify
afterwards that one rid had one answer and that every answer given is in the hall's
database.

Record lines:

- `{"k": "ans", "dev", "rid", "topic", "ans"}` — an answer as it arrived (the rid is the
  correlation data the client sent, so even a late answer is attributed);
- `{"k": "req", "dev", "rid", "action", "body", "attempts", "final", "latency_s"}` —
  a request when the client stops asking it: `final` is the answer it kept, or null
  if it gave up.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from quhao.messages import (
    ActionRequest,
    CallRequest,
    FinishRequest,
    IssueRequest,
    Person,
    RecallRequest,
    ReinstateRequest,
    SkipRequest,
    TransferRequest,
    VoidRequest,
    encode,
)

RETRY_CODES = frozenset({"unavailable", "rate_limited"})  # retry with the same rid
# What a well-formed request of the load may be refused with: the state moved under it.
ALLOWED_REFUSALS = frozenset({"no_ticket", "bad_state", "busy", "paused"})


def answer_code(answer: dict[str, Any]) -> str:
    """'ok', or the error code of a refusal ('?' if the answer has none)."""
    if answer.get("ok") is True:
        return "ok"
    error = answer.get("error")
    return str(error.get("code", "?")) if isinstance(error, dict) else "?"


def no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """TCP_NODELAY: without it every request/response waits on Nagle + delayed ACK."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_CONNECTIONS = itertools.count(1)


def raw_client(port: int, device: str, tag: str) -> paho.Client:
    """A paho MQTT v5 client logged in as `device` on the loopback broker (client ids are
    unique: two connections with one id would throw each other off)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"chaos-{tag}-{device}-{os.getpid()}-{next(_CONNECTIONS)}",
        protocol=paho.MQTTv5,
    )
    client.username_pw_set(device)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.on_socket_open = no_delay
    client.connect_async("127.0.0.1", port, keepalive=10)
    return client


class RecordFile:
    """Append-only JSON lines, one writer lock per process."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("a", encoding="utf-8", buffering=1)

    def write(self, line: dict[str, Any]) -> None:
        if self._handle is None:
            return
        text = json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._handle.write(text)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass
class Asked:
    """One request as its client saw it."""

    rid: str
    action: str
    final: dict[str, Any] | None
    attempts: int
    latency_s: float
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def code(self) -> str:
        return answer_code(self.final) if self.final is not None else "unanswered"


class Requester:
    """One device's requests to the hall over a raw paho connection."""

    def __init__(
        self,
        port: int,
        site: str,
        device: str,
        record: Path | None = None,
        *,
        timeout_s: float = 1.0,
        give_up_s: float = 90.0,
    ) -> None:
        self.site, self.device = site, device
        self.timeout_s, self.give_up_s = timeout_s, give_up_s
        self.reply_topic = f"quhao/{site}/reply/{device}"
        self.record = RecordFile(record)
        self.connected = threading.Event()
        self.stray = 0  # answers on our topic to nothing we asked: someone else's
        self._lock = threading.Lock()
        self._pending: dict[bytes, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._sent: set[bytes] = set()
        self.client = raw_client(port, device, "req")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.loop_start()
        if not self.connected.wait(15):
            self.client.loop_stop()
            raise ConnectionError(f"{device}: no MQTT connection to 127.0.0.1:{port}")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, p: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe(self.reply_topic, qos=1)  # again after every reconnect
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        correlation: bytes = getattr(props, "CorrelationData", None) or b""
        try:
            answer = json.loads(msg.payload)
        except ValueError:
            answer = {"undecodable": msg.payload[:200].decode("utf-8", "replace")}
        if not isinstance(answer, dict):
            answer = {"undecodable": repr(answer)[:200]}
        rid = correlation.decode("utf-8", "replace")
        with self._lock:
            waiter = self._pending.get(correlation)
            ours = correlation in self._sent
            if not ours:
                self.stray += 1
        self.record.write(
            {
                "k": "ans",
                "dev": self.device,
                "rid": rid,
                "topic": msg.topic,
                "ours": ours,
                "ans": answer,
            }
        )
        if waiter is not None:
            waiter[1].append(answer)
            waiter[0].set()

    def _publish(self, action: str, body: dict[str, Any], correlation: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = correlation
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.client.publish(
            f"quhao/{self.site}/hall/req/{self.device}/{action}", data, qos=1, properties=props
        )

    def ask(
        self,
        action: str,
        payload: dict[str, Any],
        rid: str,
        *,
        twice: bool = False,
        retry: bool = True,
    ) -> Asked:
        """Ask until a final answer (same rid every time); `twice` sends the first
        attempt twice at once, as a doubled key press would. Without `retry`, the first
        answer is kept whatever it says."""
        body = {"rid": rid, **payload}
        correlation = rid.encode("utf-8")
        done: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
        with self._lock:
            self._pending[correlation] = done
            self._sent.add(correlation)
        began = time.perf_counter()
        give_up = time.monotonic() + self.give_up_s
        attempts, final = 0, None
        try:
            while time.monotonic() < give_up:
                done[0].clear()
                for _ in range(2 if twice and attempts == 0 else 1):
                    self._publish(action, body, correlation)
                attempts += 1
                if done[0].wait(self.timeout_s):
                    answer = done[1][-1]
                    if not retry or answer_code(answer) not in RETRY_CODES:
                        final = answer
                        break
                    time.sleep(0.05)
        finally:
            with self._lock:
                self._pending.pop(correlation, None)
        latency = time.perf_counter() - began
        self.record.write(
            {
                "k": "req",
                "dev": self.device,
                "rid": rid,
                "action": action,
                "body": payload,
                "attempts": attempts,
                "final": final,
                "latency_s": round(latency, 6),
            }
        )
        return Asked(rid, action, final, attempts, latency, list(done[1]))

    def close(self) -> None:
        time.sleep(0.2)  # late duplicates of the last answers still get recorded
        self.client.disconnect()
        self.client.loop_stop()
        self.record.close()


# ---- the load: one process per device ------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    port: int
    site: str
    device: str
    role: str  # kiosk | counter
    phase: str  # part of every rid: requests of different phases never share one
    record: str
    seed: int
    think_s: float
    services: tuple[str, ...]  # kiosk: what it issues; counter: where it may transfer to
    window_services: tuple[str, ...] = ()  # counter: what its window serves


def load_process(spec: LoadSpec, stop: Any, ready: Any) -> None:
    """Entry point of a load process (multiprocessing, spawn)."""
    requester = Requester(spec.port, spec.site, spec.device, Path(spec.record))
    ready.set()
    try:
        if spec.role == "kiosk":
            _kiosk_loop(spec, requester, stop)
        else:
            _counter_loop(spec, requester, stop)
    finally:
        requester.record.write({"k": "end", "dev": spec.device, "stray": requester.stray})
        requester.close()


def _kiosk_loop(spec: LoadSpec, requester: Requester, stop: Any) -> None:
    rng = random.Random(spec.seed)
    pid, n = os.getpid(), 0
    last_ticket: str | None = None
    while not stop.is_set():
        n += 1
        rid = f"{spec.phase}.{spec.device}.{pid}.{n}"
        request: ActionRequest
        if last_ticket is not None and rng.random() < 0.08:
            request = VoidRequest(ticket=last_ticket)
            last_ticket = None
        else:
            service = rng.choice(spec.services)
            person = None
            if service != "enquiry":
                key = hashlib.sha256(f"{spec.device}/{pid}/{n}/{spec.seed}".encode()).hexdigest()
                person = Person(key=key, age=rng.randint(18, 90))
            request = IssueRequest(service=service, person=person)
        asked = requester.ask(request.action, encode(request), rid, twice=rng.random() < 0.05)
        if request.action == "issue" and asked.code == "ok" and asked.final is not None:
            last_ticket = asked.final["ticket"]["id"]
        if spec.think_s:
            time.sleep(rng.uniform(0.5, 1.5) * spec.think_s)


def _counter_loop(spec: LoadSpec, requester: Requester, stop: Any) -> None:
    """A clerk: call, then recall, skip, transfer, finish or call the next; now and
    then a skipped citizen comes back (reinstate)."""
    rng = random.Random(spec.seed)
    pid, n = os.getpid(), 0
    current: dict[str, Any] | None = None
    skipped: list[str] = []
    while not stop.is_set():
        n += 1
        rid = f"{spec.phase}.{spec.device}.{pid}.{n}"
        request: ActionRequest
        roll = rng.random()
        if current is None:
            if skipped and roll < 0.1:
                request = ReinstateRequest(ticket=skipped.pop(0))
            else:
                request = CallRequest()
        elif roll < 0.30:
            request = FinishRequest()
        elif roll < 0.55:
            request = CallRequest()
        elif roll < 0.70:
            request = RecallRequest()
        elif roll < 0.85:
            request = SkipRequest()
        else:
            targets = [s for s in spec.services if s != current["service"]]
            request = TransferRequest(service=rng.choice(targets))
        action = request.action
        asked = requester.ask(action, encode(request), rid, twice=rng.random() < 0.03)
        answer = asked.final or {}
        ticket = answer.get("ticket") if asked.code == "ok" else None
        if action == "call":
            current = ticket if isinstance(ticket, dict) else None
        elif action == "recall" and isinstance(ticket, dict):
            if answer.get("skipped"):
                _remember_skipped(skipped, ticket, spec)
                current = None
        elif action == "skip" and isinstance(ticket, dict):
            _remember_skipped(skipped, ticket, spec)
            current = None
        elif action in ("finish", "transfer") or asked.code == "no_ticket":
            current = None
        if spec.think_s:
            time.sleep(rng.uniform(0.5, 1.5) * spec.think_s)


def _remember_skipped(skipped: list[str], ticket: dict[str, Any], spec: LoadSpec) -> None:
    if ticket.get("service") in spec.window_services and len(skipped) < 20:
        skipped.append(str(ticket["id"]))

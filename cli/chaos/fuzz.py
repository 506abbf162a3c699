"""Malformed requests: every way a device (or a script with a device's login) can send
the hall something it must refuse, and a fuzzer process that sends them by the
thousand over raw paho connections logged in as the fuzz devices.

Each case says what the hall must do with it: answer with one of a few error codes
(`bad_request` for anything it cannot decide; `unknown_action` and `forbidden` where
the request is well formed but not allowed), on the asking device's own reply topic
only, in a small answer — or drop it (no answer at all: retained requests, requests
on topics that are not request topics). A case never gets `ok`.

The fuzzer records, per case: sent, answered by code, dropped, and every answer that
broke a rule (a wrong code, an answer where none may come, an answer on someone
else's topic, an oversized answer, nothing where an answer was due).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cli.chaos.clients import answer_code, raw_client

BAD = frozenset({"bad_request"})
MAX_ANSWER_BYTES = 2048  # an answer echoes bounded pieces of a request, never all of it
OUTSTANDING = 200  # answers awaited at once: the fuzzer paces itself on the hall


@dataclass(frozen=True)
class Malformed:
    case: str
    device: str  # in the topic: who the hall takes the asker to be
    action: str  # the topic's last level(s)
    payload: bytes
    expect: frozenset[str] | None  # acceptable codes; None: no answer may come
    reply_topic: str  # the only topic an answer may come on
    response_topic: str | None = None  # the v5 property sent (None: not sent)
    correlation: bytes | None = None
    retain: bool = False
    may_drop: bool = False  # dropping it is as right as answering it with `expect`


@dataclass(frozen=True)
class Ctx:
    """What a case builder needs: a unique tag and the identities it may use."""

    site: str
    tag: str  # unique per request: in the rid and in the correlation data
    kiosk: str  # a fuzz kiosk of the site
    counter: str  # a fuzz counter of the site
    victim: str  # a load device: its reply topic must never see our answers
    variant: int  # which variant of the case

    def reply(self, device: str) -> str:
        return f"quhao/{self.site}/reply/{device}"

    @property
    def rid(self) -> str:
        return self.tag

    @property
    def corr(self) -> bytes:
        return self.tag.encode()

    def pick(self, options: list[Any] | tuple[Any, ...]) -> Any:
        return options[self.variant % len(options)]

    def make(
        self,
        case: str,
        payload: bytes | dict[str, Any],
        expect: frozenset[str] | None = BAD,
        *,
        device: str | None = None,
        action: str = "issue",
        response_topic: str | None = "",
        reply_topic: str | None = None,
        correlation: bytes | None = b"",
        retain: bool = False,
        may_drop: bool = False,
    ) -> Malformed:
        """A request from `device` (the fuzz kiosk); "" means the default: the device's
        own reply topic as ResponseTopic, the tag as correlation data."""
        device = device or self.kiosk
        if isinstance(payload, dict):
            payload = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        own = self.reply(device)
        return Malformed(
            case,
            device,
            action,
            payload,
            expect,
            reply_topic or own,
            own if response_topic == "" else response_topic,
            self.corr if correlation == b"" else correlation,
            retain,
            may_drop,
        )


PERSON_KEY = hashlib.sha256(b"chaos fuzz person").hexdigest()

Case = Callable[[Ctx], Malformed]


def _not_json(c: Ctx) -> Malformed:
    text = c.pick([f"not json {c.rid}", f'{{"rid": "{c.rid}", ', f"{{'rid': '{c.rid}'}}", "{]"])
    return c.make("not_json", text.encode())


def _not_utf8(c: Ctx) -> Malformed:
    raw = c.pick([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    return c.make("not_utf8", b'{"rid":"' + c.rid.encode() + raw + b'","service":"social"}')


def _bom(c: Ctx) -> Malformed:
    body = json.dumps({"rid": c.rid, "service": "social"}).encode()
    return c.make("utf8_bom", b"\xef\xbb\xbf" + body)


def _not_an_object(c: Ctx) -> Malformed:
    payload = c.pick([f'["{c.rid}", 1]', "[]", "null", "42", f'"{c.rid}"', "true", ""])
    return c.make("not_an_object", payload.encode())


def _no_rid(c: Ctx) -> Malformed:
    return c.make("no_rid", {"service": "social", "person": None, "tag": c.rid})


def _rid_not_string(c: Ctx) -> Malformed:
    rid = c.pick([12345, 1.5, True, None, [c.rid], {"rid": c.rid}, -7, 0])
    return c.make("rid_not_string", {"rid": rid, "service": "social", "tag": c.rid})


def _rid_too_long(c: Ctx) -> Malformed:
    length = c.pick([129, 130, 4000])
    return c.make("rid_too_long", {"rid": c.rid + "r" * (length - len(c.rid)), "service": 1})


def _rid_empty(c: Ctx) -> Malformed:
    return c.make("rid_empty", {"rid": "", "service": "social", "tag": c.rid})


def _rid_lone_surrogate(c: Ctx) -> Malformed:
    escape = c.pick(["\\ud800", "\\udfff", "\\ud83d", "x\\udc00y"])
    text = f'{{"rid":"{c.rid}{escape}","service":"social"}}'
    return c.make("rid_lone_surrogate", text.encode())


def _surrogate_elsewhere(c: Ctx) -> Malformed:
    text = c.pick(
        [
            f'{{"rid":"{c.rid}","service":"\\ud800"}}',
            f'{{"rid":"{c.rid}","\\udbff":1}}',
            f'{{"rid":"{c.rid}","service":"social","person":{{"key":"\\udfff","age":1}}}}',
        ]
    )
    return c.make("surrogate_in_field", text.encode())


def _rid_5000_digits(c: Ctx) -> Malformed:
    text = c.pick(
        [
            '{"rid":' + "9" * 5000 + "}",
            '{"rid":-' + "1" * 5000 + "}",
            f'{{"rid":"{c.rid}","service":' + "7" * 5000 + "}",
            '{"rid":' + "1" * 4301 + "}",
        ]
    )
    return c.make("rid_5000_digits", text.encode())


def _big_numbers(c: Ctx) -> Malformed:
    number = c.pick(["9007199254740993", "1e308", "-1e300", "123456789012345678901234567890"])
    text = (
        f'{{"rid":"{c.rid}","service":"social","person":{{"key":"{PERSON_KEY}","age":{number}}}}}'
    )
    return c.make("numbers_out_of_range", text.encode())


def _nan_infinity(c: Ctx) -> Malformed:
    value = c.pick(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
    where = c.pick(
        [
            f'{{"rid":"{c.rid}","service":"social","person":{{"key":"{PERSON_KEY}","age":{value}}}}}',
            f'{{"rid":"{c.rid}","x":{value}}}',
            f'{{"rid":{value}}}',
        ]
    )
    return c.make("nan_infinity", where.encode())


def _deep(c: Ctx) -> Malformed:
    depth = c.pick([9, 20, 200, 3000])
    if depth <= 200:
        text = f'{{"rid":"{c.rid}","service":"social","x":' + '{"a":' * depth + "1" + "}" * depth
        text += "}"
    else:
        text = f'{{"rid":"{c.rid}","x":' + "[" * depth + "]" * depth + "}"
    return c.make("deeply_nested", text.encode())


def _huge_value(c: Ctx) -> Malformed:
    field_name = c.pick(["service", "rid", "x"])
    body: dict[str, Any] = {"rid": c.rid, "service": "social"}
    body[field_name] = c.rid + "界" * 70_000  # about 200 KB of UTF-8
    return c.make("value_200kb", body)


def _just_over_limit(c: Ctx) -> Malformed:
    body = {"rid": c.rid, "service": "social", "pad": ""}
    size = len(json.dumps(body).encode())
    body["pad"] = "p" * (8193 - size)
    return c.make("payload_8193_bytes", body)


def _long_string(c: Ctx) -> Malformed:
    return c.make("string_over_512", {"rid": c.rid, "service": "s" * c.pick([513, 2000])})


def _many_keys(c: Ctx) -> Malformed:
    body: dict[str, Any] = {"rid": c.rid, "service": 1}
    body.update({f"k{n}": n for n in range(c.pick([300, 700]))})
    return c.make("many_keys", body)


def _duplicate_keys(c: Ctx) -> Malformed:
    text = f'{{"rid":"{c.rid}","service":"social","service":5}}'
    return c.make("duplicate_keys", text.encode())


def _unknown_action(c: Ctx) -> Malformed:
    action = c.pick(["teleport", "ISSUE", "issue ", "叫号", "a" * 200, "$SYS", "..", "rid"])
    return c.make("unknown_action", {"rid": c.rid}, frozenset({"unknown_action"}), action=action)


def _wrong_role(c: Ctx) -> Malformed:
    device, action = c.pick(
        [
            (c.kiosk, "call"),
            (c.kiosk, "recall"),
            (c.kiosk, "transfer"),
            (c.kiosk, "login"),
            (c.counter, "issue"),
            (c.counter, "void"),
        ]
    )
    body = {"rid": c.rid, "service": "tax", "ticket": "A00001", "person": None}
    return c.make("wrong_role", body, frozenset({"forbidden"}), device=device, action=action)


def _unknown_device(c: Ctx) -> Malformed:
    device = c.pick(["kiosk-ZZ", "hall", "display", "counter-W99", "x" * 100, "设备"])
    body = {"rid": c.rid, "service": "enquiry", "person": None}
    return c.make("unknown_device", body, frozenset({"forbidden"}), device=device)


def _not_a_request_topic(c: Ctx) -> Malformed:
    action = c.pick(["issue/extra", "", "issue/", "/issue"])
    body = {"rid": c.rid, "service": "enquiry", "person": None}
    return c.make("not_a_request_topic", body, None, action=action)


def _reply_wildcard(c: Ctx) -> Malformed:
    own = c.reply(c.kiosk)
    wanted = c.pick(
        [
            own + "/#",
            own + "/+",
            own + "/a/+/b",
            own + "/a/#",
            own + "/",
            own + "//x",
            f"quhao/{c.site}/reply/#",
            f"quhao/{c.site}/reply/+",
            "#",
            own + "/" + "x" * 300,
        ]
    )
    body = {"rid": c.rid, "service": 7}
    return c.make("reply_topic_wildcard", body, response_topic=wanted, reply_topic=own)


def _reply_someone_else(c: Ctx) -> Malformed:
    own = c.reply(c.kiosk)
    wanted = c.pick(
        [
            c.reply(c.victim),
            c.reply(c.victim) + "/x",
            own + "x",
            f"quhao/other/reply/{c.kiosk}",
            f"quhao/{c.site}/event/forged",
            f"quhao/{c.site}/hall/state",
            f"quhao/{c.site}/window/1/state",
        ]
    )
    body = {"rid": c.rid, "service": 7}
    return c.make("reply_topic_of_another", body, response_topic=wanted, reply_topic=own)


def _reply_own_sub_topic(c: Ctx) -> Malformed:
    wanted = c.reply(c.kiosk) + "/fuzz/" + c.tag.replace(":", "-")
    body = {"rid": c.rid, "service": 7}
    return c.make("reply_topic_own_sub", body, response_topic=wanted, reply_topic=wanted)


def _no_properties(c: Ctx) -> Malformed:
    body = {"rid": c.rid, "service": 7}
    return c.make("no_v5_properties", body, response_topic=None, correlation=None)


def _retained(c: Ctx) -> Malformed:
    # A retained request would reach every hall that subscribes later. The hall drops it
    # (it subscribes with "retain as published", so it sees the flag even live); a hall
    # that took it live like any request must at least refuse this one. The last one
    # stays on the broker for later halls, which must ignore it (the kill phase counts).
    return c.make("retained_request", {"rid": c.rid, "service": 7}, retain=True, may_drop=True)


def _huge_correlation(c: Ctx) -> Malformed:
    size = c.pick([65_535, 4096, 129])
    correlation = (c.tag + ":").encode() + b"\x00\xff" * size
    return c.make("huge_correlation", {"rid": c.rid, "service": 7}, correlation=correlation[:size])


def _wrong_types(c: Ctx) -> Malformed:
    """Every field of every action with a wrong type, and keys no action names, sent by a
    device that may act."""
    unknown_ok = frozenset({"bad_request", "unknown_ticket"})
    kiosk, counter = c.kiosk, c.counter
    person = {"key": PERSON_KEY, "age": 40}
    variants: list[tuple[str, str, dict[str, Any], frozenset[str]]] = [
        (kiosk, "issue", {"service": 5}, BAD),
        (kiosk, "issue", {"service": ["social"]}, BAD),
        (kiosk, "issue", {"service": {"id": "social"}}, BAD),
        (kiosk, "issue", {"service": True}, BAD),
        (kiosk, "issue", {"person": person}, BAD),  # missing service
        (kiosk, "issue", {"service": "social", "person": "110101199003070011"}, BAD),
        (kiosk, "issue", {"service": "social", "person": ["k", 40]}, BAD),
        (kiosk, "issue", {"service": "social", "person": {"key": 5, "age": 40}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {"key": None, "age": 40}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {"key": "ZZ" * 16, "age": 1}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {"age": 40}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {**person, "age": "40"}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {**person, "age": 40.5}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {**person, "age": True}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {**person, "age": -1}}, BAD),
        (kiosk, "issue", {"service": "social", "person": {**person, "age": 131}}, BAD),
        (kiosk, "issue", {"service": "social", "person": person, "priority": 5}, BAD),
        (kiosk, "issue", {"service": "social", "person": person, "priority": "vip"}, BAD),
        (kiosk, "issue", {"service": "social", "person": person, "override": "S001"}, BAD),
        (kiosk, "issue", {"service": "social", "person": person, "override": {"staff": 5}}, BAD),
        (kiosk, "issue", {"service": "social", "person": person, "override": {"card": 5}}, BAD),
        (kiosk, "issue", {"service": "social", "person": person, "override": []}, BAD),
        (kiosk, "void", {"ticket": 5}, BAD),
        (kiosk, "void", {"ticket": ["A00001"]}, BAD),
        (kiosk, "void", {"ticket": {}}, BAD),
        (kiosk, "void", {}, BAD),
        (counter, "call", {"expect": 5}, BAD),
        (counter, "call", {"expect": ["A00001"]}, BAD),
        (counter, "transfer", {"service": 5}, BAD),
        (counter, "transfer", {"service": None}, BAD),
        (counter, "transfer", {"service": "tax", "ticket": 5}, BAD),
        (counter, "reinstate", {"ticket": 5}, BAD),
        (counter, "reinstate", {}, BAD),
        (counter, "rate", {"ticket": 5, "level": 5}, BAD),
        (counter, "rate", {"ticket": "A99999", "level": "5"}, unknown_ok),
        (counter, "rate", {"ticket": "A99999", "level": 3, "reason": 5}, unknown_ok),
        (counter, "login", {"staff": 5}, BAD),
        (counter, "login", {"staff": None}, BAD),
        (counter, "login", {"card": 5}, BAD),
        (counter, "login", {"card": "04A1", "staff": []}, frozenset({"bad_request", "forbidden"})),
        # keys the action does not name: refused, never silently ignored
        (kiosk, "issue", {"service": "social", "person": person, "colour": "red"}, BAD),
        (kiosk, "issue", {"service": "social", "person": {**person, "name": "张三"}}, BAD),
        (
            kiosk,
            "issue",
            {"service": "social", "person": person, "override": {"card": "a", "x": 1}},
            BAD,
        ),
        (counter, "call", {"expect": None, "force": True}, BAD),
        (counter, "finish", {"ticket": "A00001"}, BAD),
        (counter, "login", {"card": "04A1", "staff": "S001", "pin": "1111"}, BAD),
    ]
    device, action, body, expect = c.pick(variants)
    return c.make("wrong_field_types", {"rid": c.rid, **body}, expect, device=device, action=action)


# (builder, weight per round): the 200 KB and 64 KB cases are sent less often.
CASES: tuple[tuple[Case, int], ...] = (
    (_not_json, 4),
    (_not_utf8, 4),
    (_bom, 2),
    (_not_an_object, 4),
    (_no_rid, 3),
    (_rid_not_string, 4),
    (_rid_too_long, 3),
    (_rid_empty, 2),
    (_rid_lone_surrogate, 4),
    (_surrogate_elsewhere, 2),
    (_rid_5000_digits, 3),
    (_big_numbers, 2),
    (_nan_infinity, 4),
    (_deep, 4),
    (_huge_value, 1),
    (_just_over_limit, 2),
    (_long_string, 2),
    (_many_keys, 2),
    (_duplicate_keys, 2),
    (_unknown_action, 4),
    (_wrong_role, 4),
    (_unknown_device, 4),
    (_not_a_request_topic, 2),
    (_reply_wildcard, 5),
    (_reply_someone_else, 4),
    (_reply_own_sub_topic, 2),
    (_no_properties, 2),
    (_retained, 1),
    (_huge_correlation, 2),
    (_wrong_types, 12),
)
CASE_NAMES = tuple(sorted({builder(Ctx("s", "t", "k", "c", "v", 0)).case for builder, _ in CASES}))


def schedule() -> list[Case]:
    """One round: every case, as often as its weight, interleaved."""
    rounds: list[Case] = []
    most = max(weight for _, weight in CASES)
    for turn in range(most):
        rounds += [builder for builder, weight in CASES if turn < weight]
    return rounds


@dataclass(frozen=True)
class FuzzSpec:
    port: int
    site: str
    index: int  # which fuzzer: tags are fz{index}:{n}
    kiosk: str
    counter: str
    victims: tuple[str, ...]  # load devices whose reply topics are watched
    count: int
    result: str  # JSON summary written here


@dataclass
class FuzzTally:
    sent: Counter[str] = field(default_factory=Counter)
    answered: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    dropped: Counter[str] = field(default_factory=Counter)
    broken: list[str] = field(default_factory=list)  # every rule an answer broke
    broken_count: int = 0

    def breach(self, text: str) -> None:
        self.broken_count += 1
        if len(self.broken) < 50:
            self.broken.append(text)

    def as_json(self) -> dict[str, Any]:
        return {
            "sent": dict(self.sent),
            "answered": {k: dict(v) for k, v in self.answered.items()},
            "dropped": dict(self.dropped),
            "broken": self.broken,
            "broken_count": self.broken_count,
        }


class Fuzzer:
    """Sends `count` malformed requests as one fuzz kiosk and one fuzz counter, and
    listens on every reply topic of the site (and the forged targets) for the answers."""

    def __init__(self, spec: FuzzSpec) -> None:
        self.spec = spec
        self.tally = FuzzTally()
        self.lock = threading.Lock()
        self.awaiting: dict[str, tuple[Malformed, float]] = {}  # tag → (request, sent at)
        self.silent: dict[str, Malformed] = {}  # tag → request that must get no answer
        self.optional: dict[str, Malformed] = {}  # tag → request that may get none
        self.room = threading.Condition(self.lock)
        self.listener = self._connect(spec.kiosk, "listen", self._on_message)
        self.senders = {
            spec.kiosk: self._connect(spec.kiosk, "send", None),
            spec.counter: self._connect(spec.counter, "send", None),
        }

    def _connect(
        self, device: str, tag: str, on_message: Callable[..., None] | None
    ) -> paho.Client:
        client = raw_client(self.spec.port, device, f"fuzz{self.spec.index}-{tag}")
        connected = threading.Event()
        site = self.spec.site

        def on_connect(cl: paho.Client, userdata: Any, flags: Any, rc: Any, p: Any) -> None:
            if on_message is not None:
                for topic in (
                    "quhao/+/reply/#",
                    f"quhao/{site}/event/forged",
                    f"quhao/{site}/hall/state",
                    f"quhao/{site}/window/1/state",
                ):
                    cl.subscribe(topic, qos=1)
            connected.set()

        client.on_connect = on_connect
        if on_message is not None:
            client.on_message = on_message
        client.loop_start()
        if not connected.wait(15):
            raise ConnectionError(f"fuzzer {device}: no MQTT connection")
        return client

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        correlation: bytes = getattr(props, "CorrelationData", None) or b""
        try:
            answer = json.loads(msg.payload)
        except ValueError:
            answer = None
        tag = correlation.split(b":", 2)
        key = b":".join(tag[:2]).decode("utf-8", "replace") if len(tag) >= 2 else ""
        if not key and isinstance(answer, dict) and isinstance(answer.get("rid"), str):
            key = answer["rid"]  # the request without v5 properties: matched by rid
        if not key.startswith(f"fz{self.spec.index}:"):
            return  # the load's answers, or another fuzzer's
        with self.lock:
            waiting = self.awaiting.pop(key, None)
            silent = self.silent.pop(key, None)
            request = waiting[0] if waiting else silent or self.optional.pop(key, None)
            if request is None:
                return  # a second delivery (we listen on several filters)
            case = request.case
            code = answer_code(answer) if isinstance(answer, dict) else "undecodable"
            self.tally.answered[case][code] += 1
            if silent is not None:
                self.tally.breach(f"{case}: answered ({code}) though it must be dropped")
            elif request.expect is not None and code not in request.expect | {"rate_limited"}:
                self.tally.breach(f"{case}: answered {code}, want {sorted(request.expect)}")
            if msg.topic != request.reply_topic:
                self.tally.breach(f"{case}: answered on {msg.topic}, not {request.reply_topic}")
            if len(msg.payload) > MAX_ANSWER_BYTES:
                self.tally.breach(f"{case}: answer of {len(msg.payload)} bytes")
            if len(correlation) > 128:
                self.tally.breach(f"{case}: {len(correlation)} bytes of correlation echoed")
            self.room.notify()

    def send(self, request: Malformed, tag: str) -> None:
        props = None
        if request.response_topic is not None or request.correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if request.response_topic is not None:
                props.ResponseTopic = request.response_topic
            if request.correlation is not None:
                props.CorrelationData = request.correlation
        sender = self.senders.get(request.device, self.senders[self.spec.kiosk])
        topic = f"quhao/{self.spec.site}/hall/req/{request.device}/{request.action}"
        with self.lock:
            self.tally.sent[request.case] += 1
            if request.expect is None:
                self.silent[tag] = request
            elif request.may_drop:
                self.optional[tag] = request
            else:
                self.awaiting[tag] = (request, time.monotonic())
        sender.publish(topic, request.payload, qos=1, retain=request.retain, properties=props)

    def run(self) -> FuzzTally:
        rounds = schedule()
        spec = self.spec
        for n in range(spec.count):
            builder = rounds[n % len(rounds)]
            tag = f"fz{spec.index}:{n}"
            victim = spec.victims[n % len(spec.victims)] if spec.victims else "kiosk-K1"
            ctx = Ctx(spec.site, tag, spec.kiosk, spec.counter, victim, n // len(rounds))
            with self.room:
                self.room.wait_for(lambda: len(self.awaiting) < OUTSTANDING, timeout=10)
            self.send(builder(ctx), tag)
        deadline = time.monotonic() + 15
        with self.room:
            self.room.wait_for(
                lambda: not self.awaiting, timeout=max(0.0, deadline - time.monotonic())
            )
        time.sleep(1.0)  # whatever must be dropped has had time to be answered, wrongly
        with self.lock:
            for tag, (request, _) in self.awaiting.items():
                self.tally.breach(f"{request.case}: no answer to {tag}")
            for request in (*self.silent.values(), *self.optional.values()):
                self.tally.dropped[request.case] += 1
        return self.tally

    def close(self) -> None:
        for client in (self.listener, *self.senders.values()):
            client.disconnect()
            client.loop_stop()


def fuzz_process(spec: FuzzSpec, ready: Any, go: Any) -> None:
    """Entry point of a fuzzer process (multiprocessing, spawn)."""
    fuzzer = Fuzzer(spec)
    ready.set()
    go.wait(60)
    began = time.monotonic()
    tally = fuzzer.run()
    fuzzer.close()
    result = {**tally.as_json(), "seconds": round(time.monotonic() - began, 2), "pid": os.getpid()}
    Path(spec.result).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")

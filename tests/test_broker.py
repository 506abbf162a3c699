"""The generated hall broker: per-device auth, ACL, TLS; the suite through it; sd_notify."""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from quhao.broker import Mosquitto
from quhao.brokergen import generate
from quhao.config import load
from quhao.topics import Topics
from tests.helpers import (
    SITE,
    SITE_ID,
    Daemon,
    Device,
    GeneratedBroker,
    generated_broker,
    hall_daemon,
)

T = Topics(SITE_ID)
PROBE_IDS = itertools.count()
R = f"quhao/{SITE_ID}"


@pytest.fixture
def hall_broker(tmp_path: Path) -> Iterator[GeneratedBroker]:
    running = generated_broker(SITE, tmp_path / "broker")
    yield running
    running.close()


class Probe:
    """A raw paho client that reports what the broker allowed."""

    def __init__(
        self, port: int, user: str | None, password: str | None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{user}-{next(PROBE_IDS)}",
            protocol=paho.MQTTv5,
        )
        if user:
            self.client.username_pw_set(user, password)
        if tls:
            self.client.tls_set_context(tls)
        self.connack: object = None
        self.acks: dict[int, object] = {}
        self.granted: dict[int, object] = {}
        self.received: list[str] = []
        self.done = threading.Condition()
        self.client.on_connect = self._connected
        self.client.on_publish = self._published
        self.client.on_subscribe = self._subscribed
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        with self.done:
            self.done.wait_for(lambda: self.connack is not None, 5)

    def _connected(self, client, userdata, flags, reason, props) -> None:
        with self.done:
            self.connack = reason
            self.done.notify_all()

    def _published(self, client, userdata, mid, reason, props) -> None:
        with self.done:
            self.acks[mid] = reason
            self.done.notify_all()

    def _subscribed(self, client, userdata, mid, reasons, props) -> None:
        with self.done:
            self.granted[mid] = reasons[0]
            self.done.notify_all()

    def _message(self, client, userdata, message) -> None:
        with self.done:
            self.received.append(message.topic)
            self.done.notify_all()

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def may_publish(self, topic: str) -> bool:
        info = self.client.publish(topic, b"{}", qos=1)
        with self.done:
            self.done.wait_for(lambda: info.mid in self.acks, 5)
        return not self.acks[info.mid].is_failure

    def may_read(self, topic: str, publisher: Probe) -> bool:
        """Mosquitto 2 grants any SUBSCRIBE and applies `read` to what it delivers:
        so subscribe, let the hall publish there, and see whether it arrives."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self.done:
            self.done.wait_for(lambda: mid in self.granted, 5)
        assert publisher.may_publish(topic)
        with self.done:
            return self.done.wait_for(lambda: topic in self.received, 0.5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


MATRIX = [
    # user, action, topic, allowed
    ("kiosk-K1", "pub", f"{R}/hall/req/kiosk-K1/issue", True),
    ("kiosk-K1", "pub", f"{R}/hall/req/counter-W1/call", False),
    ("kiosk-K1", "pub", f"{R}/window/1/state", False),
    ("kiosk-K1", "pub", f"{R}/event/ticket.called", False),
    ("kiosk-K1", "pub", f"{R}/device/kiosk-K1/status", True),
    ("kiosk-K1", "pub", f"{R}/device/kiosk-K2/status", False),
    ("kiosk-K1", "pub", f"{R}/device/hall/status", False),  # no forged hall health
    ("counter-W1", "pub", f"{R}/device/hall/status", False),
    ("kiosk-K1", "read", f"{R}/reply/kiosk-K1", True),
    ("kiosk-K1", "read", f"{R}/reply/counter-W1", False),
    ("kiosk-K1", "read", f"{R}/hall/req/counter-W1/call", False),
    ("kiosk-K1", "read", f"{R}/hall/state", True),
    ("counter-W1", "pub", f"{R}/hall/req/counter-W1/call", True),
    ("counter-W1", "pub", f"{R}/hall/req/counter-W2/call", False),
    ("counter-W1", "pub", f"{R}/hall/req/kiosk-K1/issue", False),
    ("counter-W1", "pub", f"{R}/window/1/state", False),
    ("counter-W1", "read", f"{R}/window/1/state", True),
    ("counter-W1", "read", f"{R}/reply/counter-W2", False),
    ("counter-W1", "read", f"{R}/event/alert.bad_rating", False),
    ("display", "pub", f"{R}/window/1/state", False),
    ("display", "pub", f"{R}/hall/req/display/call", False),
    ("display", "read", f"{R}/hall/state", True),
    ("display", "read", f"{R}/event/ticket.called", True),
    ("display", "read", f"{R}/hall/req/kiosk-K1/issue", False),
    ("display", "read", f"{R}/reply/kiosk-K1", False),
    ("ctl", "pub", f"{R}/window/1/state", False),
    ("ctl", "pub", f"{R}/device/ctl/status", False),
    ("ctl", "read", f"{R}/window/1/state", True),
    ("ctl", "read", f"{R}/reply/counter-W1", False),
    ("monitor", "pub", f"{R}/hall/req/monitor/issue", False),
    ("monitor", "read", f"{R}/hall/state", True),
    ("monitor", "read", f"{R}/hall/req/counter-W1/call", False),
    ("hall", "pub", f"{R}/window/1/state", True),
    ("hall", "read", f"{R}/hall/req/kiosk-K1/issue", True),
]


def test_acl_matrix_of_roles_topics_and_directions(hall_broker: GeneratedBroker) -> None:
    publisher = Probe(hall_broker.broker.port, "hall", hall_broker.password("hall"))
    # one connection per user: a second login as the same user takes over the session
    probes: dict[str, Probe] = {"hall": publisher}
    try:
        for user, action, topic, allowed in MATRIX:
            if user not in probes:
                probes[user] = Probe(hall_broker.broker.port, user, hall_broker.password(user))
                assert probes[user].connected, f"{user} could not log in"
            probe = probes[user]
            got = probe.may_publish(topic) if action == "pub" else probe.may_read(topic, publisher)
            assert got is allowed, f"{user} {action} {topic}: allowed={got}, want {allowed}"
    finally:
        for probe in probes.values():
            probe.close()


def test_wrong_password_and_anonymous_are_refused(hall_broker: GeneratedBroker) -> None:
    wrong = Probe(hall_broker.broker.port, "kiosk-K1", "not-the-password")
    anonymous = Probe(hall_broker.broker.port, None, None)
    borrowed = Probe(hall_broker.broker.port, "kiosk-K2", hall_broker.password("kiosk-K1"))
    for probe in (wrong, anonymous, borrowed):
        assert probe.connack is not None and probe.connack.is_failure
        probe.close()


def _tls(hall_broker: GeneratedBroker, user: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(hall_broker.out / "ca" / "ca.crt"))
    if user:
        folder = hall_broker.credentials / user
        context.load_cert_chain(folder / "client.crt", folder / "client.key")
    return context


def test_tls_listener(hall_broker: GeneratedBroker) -> None:
    secure = Probe(
        hall_broker.tls_port,
        "counter-W1",
        hall_broker.password("counter-W1"),
        _tls(hall_broker, "counter-W1"),
    )
    assert secure.connected and secure.may_publish(f"{R}/hall/req/counter-W1/call")
    secure.close()
    # a plain MQTT connection to the TLS port gets nowhere
    with socket.create_connection(("127.0.0.1", hall_broker.tls_port), 3) as raw:
        raw.sendall(bytes.fromhex("101000044d5154540502003c000003") + b"raw")
        raw.settimeout(3)
        try:
            answer = raw.recv(16)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        assert not answer.startswith(b"\x20")  # no CONNACK
    # without a client certificate the handshake fails
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        socket.create_connection(("127.0.0.1", hall_broker.tls_port), 3) as raw,
        _tls(hall_broker, None).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(bytes.fromhex("101000044d5154540502003c000003") + b"raw")
        if not tls.recv(16):
            raise ConnectionResetError("closed")


def test_the_suite_runs_through_the_generated_authenticated_broker(
    hall_broker: GeneratedBroker, tmp_path: Path
) -> None:
    from simulators.keys import KeypadFeeder
    from simulators.led import LedSimulator
    from tests.test_counter import counter_site

    site = counter_site(tmp_path)
    led = LedSimulator(tmp_path / "led-1", 1).start()
    keys = KeypadFeeder(tmp_path / "keys-counter-W1.fifo")
    creds = str(hall_broker.credentials)
    plain = hall_broker.broker.url
    tls = f"mqtts://localhost:{hall_broker.tls_port}"
    hall = Daemon(
        [
            "hall",
            "--config",
            str(site),
            "--broker",
            plain,
            "--credentials",
            creds,
            "--state-dir",
            str(tmp_path / "hall"),
        ],
        tmp_path / "hall.log",
        "serving",
    ).start()
    counter = Daemon(
        [
            "counter",
            "--config",
            str(site),
            "--broker",
            tls,
            "--credentials",
            creds,
            "--device",
            "counter-W1",
        ],
        tmp_path / "counter.log",
        "counter serving",
    ).start()
    try:
        led.wait_for(lambda t: t == "1号窗口")
        # a kiosk on the LAN: TLS with its client certificate and password
        from quhao.mqtt import Bus, credentials
        from quhao.rpc import HallClient

        password, files = credentials(hall_broker.credentials, "kiosk-K1")
        bus = Bus(tls, "kiosk-K1", username="kiosk-K1", password=password, tls=files)
        kiosk = HallClient(bus, T, "kiosk-K1")
        bus.start()
        issued = kiosk.request(
            "issue", {"service": "social", "person": {"key": "ab" * 32, "age": 40}}
        )
        assert issued["ticket"]["number"] == "A001"
        keys.tap("KEY_KPENTER")
        led.wait_for(lambda t: "A001" in t)
        bus.stop()
        # the counter's own name cannot be borrowed to act for another window (after
        # the counter stopped: a second login as counter-W1 takes over its session)
        assert counter.stop() == 0
        impostor = Probe(hall_broker.broker.port, "counter-W1", hall_broker.password("counter-W1"))
        assert not impostor.may_publish(f"{R}/hall/req/counter-W2/call")
        impostor.close()
    finally:
        counter.stop()
        hall.stop()
        led.close()
        keys.close()


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    return sock


Heard = list[tuple[float, str]]  # (monotonic time, message) as the daemons told "systemd"


def _listen(sock: socket.socket, until: Callable[[Heard], bool], timeout: float) -> Heard:
    """What comes on the notify socket, until `until` holds for it or `timeout` passes."""
    out: Heard = []
    deadline = time.monotonic() + timeout
    while not until(out) and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            out.append((time.monotonic(), sock.recv(4096).decode()))
    return out


def _pets(heard: Heard) -> int:
    return sum(m == "WATCHDOG=1" for _, m in heard)


def test_ready_and_watchdog_and_a_stuck_loop_stops_petting(
    broker: Mosquitto, tmp_path: Path
) -> None:
    import sqlite3

    sock = _notify_socket(tmp_path)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "600000"}
    hall = hall_daemon(broker.url, tmp_path / "hall", env=env).start()
    texts = [m for _, m in _listen(sock, lambda heard: _pets(heard) >= 2, timeout=5.0)]
    assert any(m.startswith("READY=1") for m in texts), texts
    assert texts.count("WATCHDOG=1") >= 2
    # Hold the database: the hall's next commit blocks (busy_timeout 5 s), its loop is stuck.
    db = sqlite3.connect(tmp_path / "hall" / "hall.sqlite", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    kiosk = Device(broker.url, "kiosk-K1")
    threading.Thread(target=lambda: _quiet(kiosk), daemon=True).start()
    began = time.monotonic()

    def silent_for_long(heard: Heard) -> bool:  # longer than the 0.6 s watchdog allows
        last = max([began, *(t for t, m in heard if m == "WATCHDOG=1")])
        return time.monotonic() - last > 1.6

    held = _listen(sock, silent_for_long, timeout=3.0)
    ended = time.monotonic()
    db.execute("ROLLBACK")
    db.close()
    edges = [began, *(t for t, m in held if m == "WATCHDOG=1"), ended]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(edges)]
    assert max(gaps) > 1.5, f"watchdog kept being petted while the loop was stuck: {gaps}"
    resumed = [m for _, m in _listen(sock, lambda heard: _pets(heard) >= 1, timeout=4.0)]
    assert "WATCHDOG=1" in resumed
    assert hall.alive
    kiosk.close()
    assert hall.stop() == 0
    sock.close()


def _quiet(kiosk: Device) -> None:
    # the answer may be `unavailable` or time out: not what is tested
    with contextlib.suppress(Exception):
        kiosk.request("issue", service="enquiry", person=None)


def test_counter_and_kiosk_say_ready(broker: Mosquitto, tmp_path: Path) -> None:
    sock = _notify_socket(tmp_path)
    (tmp_path / "test.secret").write_text((SITE.parent / "test.secret").read_text())
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    daemons = [
        Daemon(
            ["counter", "--config", str(SITE), "--broker", broker.url, "--device", "counter-W2"],
            tmp_path / "counter.log",
            "counter serving",
            env,
        ).launch(),
        Daemon(
            ["kiosk", "--config", str(SITE), "--broker", broker.url, "--device", "kiosk-K2"],
            tmp_path / "kiosk.log",
            "serving",
            env,
        ).launch(),
    ]
    for daemon in daemons:
        daemon.wait_ready()

    def both_ready_and_petting(heard: Heard) -> bool:
        return sum(m.startswith("READY=1") for _, m in heard) >= 2 and _pets(heard) >= 4

    texts = [m for _, m in _listen(sock, both_ready_and_petting, timeout=5.0)]
    assert sum(m.startswith("READY=1") for m in texts) == 2
    assert texts.count("WATCHDOG=1") >= 4
    for daemon in daemons:
        assert daemon.stop() == 0
    sock.close()


def test_broker_gen_again_keeps_every_secret_and_binds_identity(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    kwargs = {"lan_bind": "10.0.0.2", "run_as": "mosquitto"}
    generate(load(SITE), out, **kwargs)
    secrets_ = sorted(
        p for p in out.rglob("*") if p.is_file() and p.name not in ("passwd", "passwd-ws")
    )
    before = {p: p.read_bytes() for p in secrets_ if p.name not in ("server.crt", "server.key")}
    generate(load(SITE), out, **kwargs)
    assert {p: p.read_bytes() for p in before} == before
    users = [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert {"hall", "display", "ctl", "monitor", "kiosk-K1", "counter-W1"} <= set(users)
    assert [line.split(":")[0] for line in (out / "passwd-ws").read_text().splitlines()] == [
        "display"
    ]
    # the hall connects on loopback only: no client certificate to present on the LAN
    assert not (out / "credentials" / "hall" / "client.crt").exists()
    for user in ("kiosk-K1", "display", "ctl", "monitor"):
        assert (out / "credentials" / user / "client.crt").exists(), user
    listeners = (out / "mosquitto.conf").read_text().split("\nlistener ")[1:]
    assert [block.split("\n")[0] for block in listeners] == [
        "1883 127.0.0.1",
        "8883 10.0.0.2",
        "9001 lo",
    ]
    for block in listeners:
        assert "use_username_as_clientid true" in block and "allow_anonymous false" in block
    assert "use_identity_as_username true" in listeners[1]
    assert "require_certificate true" in listeners[1] and "password_file" not in listeners[1]
    assert f"password_file {out}/passwd-ws" in listeners[2]

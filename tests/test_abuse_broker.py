"""Attacks on the generated hall broker by someone holding one device's credentials.

Each attack is tried against the real configuration from `quhao broker gen` (TLS on a
stand-in LAN address, 127.0.0.2; loopback; websockets) and must fail, and good traffic
must still work afterwards:
- taking over another's session with its client id (the hall's above all), which would
  knock it off and fire its offline Last Will;
- the websockets listener: device users refused, reachable on loopback only;
- a client certificate used under another user's name and password.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from quhao.brokergen import MONITOR_USER, _ca, _issue, users
from quhao.config import load
from quhao.mqtt import Bus, credentials
from quhao.rpc import HallClient
from quhao.topics import Topics
from quhao.wire import decode_object, encode
from tests.helpers import SITE, SITE_ID, Daemon, GeneratedBroker, generated_broker, wait_until

LAN = "127.0.0.2"  # stands in for the hall server's LAN address (all of 127/8 is local)
T = Topics(SITE_ID)
HALL_ONLINE = T.availability("hall")


@pytest.fixture
def hall_broker(tmp_path: Path) -> Iterator[GeneratedBroker]:
    running = generated_broker(SITE, tmp_path / "broker", lan=LAN)
    yield running
    running.close()


class Raw:
    """A bare paho client on one listener: what the broker granted, what it delivered,
    and whether it ever dropped this connection."""

    def __init__(
        self,
        hb: GeneratedBroker,
        listener: str,
        client_id: str,
        *,
        user: str | None = None,
        password: str | None = None,
        cert: str | None = None,
        cert_folder: Path | None = None,
        will: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        self.name = f"{client_id} via {listener} ({user or cert or 'anonymous'})"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            transport="websockets" if listener == "ws" else "tcp",
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        if user:
            self.client.username_pw_set(user, password)
        if will:
            self.client.will_set(will[0], encode(will[1]), qos=1, retain=True)
        host, port = {
            "loopback": ("127.0.0.1", hb.port),
            "tls": (LAN, hb.tls_port),
            "ws": ("127.0.0.1", hb.ws_port),
        }[listener]
        if listener == "tls":
            context = ssl.create_default_context(cafile=str(hb.out / "ca" / "ca.crt"))
            if cert:
                folder = cert_folder or hb.out / "credentials" / cert
                context.load_cert_chain(folder / "client.crt", folder / "client.key")
            self.client.tls_set_context(context)
        self.connack: Any = None
        self.drops: list[str] = []
        self.acks: dict[int, Any] = {}
        self.granted: dict[int, Any] = {}
        self.received: list[tuple[str, bytes]] = []
        self.done = threading.Condition()
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_publish = self._published
        self.client.on_subscribe = self._subscribed
        self.client.on_message = self._message
        self.error: Exception | None = None
        try:
            self.client.connect(host, port)
        except (OSError, ssl.SSLError) as exc:  # e.g. the TLS handshake refused
            self.error = exc
            return
        self.client.loop_start()
        with self.done:
            self.done.wait_for(lambda: self.connack is not None or self.drops, 5)

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self.done:
            if self.connack is None or not reason.is_failure:
                self.connack = reason
            self.done.notify_all()

    def _disconnected(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        with self.done:
            self.drops.append(str(reason))
            self.done.notify_all()

    def _published(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self.done:
            self.acks[mid] = reason
            self.done.notify_all()

    def _subscribed(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self.done:
            self.granted[mid] = reasons[0]
            self.done.notify_all()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.done:
            self.received.append((message.topic, message.payload))
            self.done.notify_all()

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def may_publish(self, topic: str) -> bool:
        info = self.client.publish(topic, b"{}", qos=1)
        with self.done:
            assert self.done.wait_for(lambda: info.mid in self.acks, 5), f"{self.name}: no PUBACK"
        return not self.acks[info.mid].is_failure

    def subscribe(self, topic_filter: str) -> None:
        _, mid = self.client.subscribe(topic_filter, qos=1)
        with self.done:
            assert self.done.wait_for(lambda: mid in self.granted, 5)

    def may_read(self, topic: str, publisher: Raw) -> bool:
        """Mosquitto 2 grants any SUBSCRIBE and applies `read` to what it delivers."""
        self.subscribe(topic)
        assert publisher.may_publish(topic)
        with self.done:
            return self.done.wait_for(lambda: any(t == topic for t, _ in self.received), 0.5)

    def states(self, topic: str) -> list[str]:
        with self.done:
            return [decode_object(p).get("state", "") for t, p in self.received if t == topic]

    def drop(self) -> None:
        """Vanish without a DISCONNECT, as a crashed client does (its Will fires)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _hall(hb: GeneratedBroker, tmp_path: Path) -> Daemon:
    return Daemon(
        [
            "hall",
            "--config",
            str(SITE),
            "--broker",
            f"mqtt://127.0.0.1:{hb.port}",
            "--credentials",
            str(hb.out / "credentials"),
            "--state-dir",
            str(tmp_path / "hall"),
        ],
        tmp_path / "hall.log",
        "serving",
    ).start()


def _kiosk_issues_a_ticket(hb: GeneratedBroker, device: str) -> dict[str, Any]:
    """Good traffic: a kiosk on the LAN (TLS, its certificate) asks the hall for a ticket."""
    password, files = credentials(hb.out / "credentials", device)
    bus = Bus(f"mqtts://{LAN}:{hb.tls_port}", device, password=password, tls=files)
    kiosk = HallClient(bus, T, device)
    bus.start()
    try:
        return kiosk.request("issue", {"service": "enquiry", "person": None}, timeout=3.0)
    finally:
        bus.stop()


def test_nobody_takes_over_the_halls_or_another_devices_session(
    hall_broker: GeneratedBroker, tmp_path: Path
) -> None:
    hb = hall_broker
    hall = _hall(hb, tmp_path)
    watcher = Raw(hb, "loopback", "monitor", user="monitor", password=hb.password("monitor"))
    victim = Raw(  # as the kiosk daemon logs in: its name, password and certificate
        hb,
        "tls",
        "kiosk-K2",
        user="kiosk-K2",
        password=hb.password("kiosk-K2"),
        cert="kiosk-K2",
        will=(T.availability("kiosk-K2"), {"state": "offline"}),
    )
    attackers: list[Raw] = []
    try:
        assert watcher.connected and victim.connected
        victim.client.publish(T.availability("kiosk-K2"), encode({"state": "online"}), 1, True)
        watcher.subscribe(T.availability("+"))
        wait_until(lambda: "online" in watcher.states(HALL_ONLINE), 5, "the hall online")
        wait_until(lambda: "online" in watcher.states(T.availability("kiosk-K2")), 5, "K2 online")

        k1, display = hb.password("kiosk-K1"), hb.password("display")
        for target in ("hall", "kiosk-K2"):
            for listener, login in (
                ("loopback", {"user": "kiosk-K1", "password": k1}),
                ("loopback", {"user": "display", "password": display}),
                ("loopback", {"user": "counter-W1", "password": hb.password("counter-W1")}),
                ("tls", {"cert": "kiosk-K1"}),
                ("tls", {"cert": "display"}),
                ("ws", {"user": "display", "password": display}),
            ):
                attacker = Raw(hb, listener, target, **login)  # type: ignore[arg-type]
                attackers.append(attacker)
                # let in, but under its own name: nobody was taken over
                assert attacker.connected, attacker.name
        # the hall's offline Will, set by a kiosk that then drops without a DISCONNECT:
        # Mosquitto checks the Will against the kiosk's ACL when it fires, and drops it
        will = Raw(
            hb,
            "loopback",
            "hall",
            user="kiosk-K1",
            password=k1,
            will=(HALL_ONLINE, {"state": "offline"}),
        )
        assert will.connected

        def sessions_ended() -> int:  # of kiosk-K1, the user every K1 attacker logs in as
            log = hb.log()
            return log.count("Client kiosk-K1 closed its connection.") + log.count(
                "Client kiosk-K1 already connected, closing old connection."
            )

        ended = sessions_ended()
        will.drop()
        # The broker has ended the Will's session (dropped, or taken over by a reconnecting
        # K1 attacker first): its Will went out then, or not at all.
        wait_until(lambda: sessions_ended() > ended, what="the Will's session to end")
        # A round trip on each client whose session an attack would have taken: a client
        # knocked off hears of it before any answer the broker sends it later.
        answer = _kiosk_issues_a_ticket(hb, "kiosk-K1")  # through the hall's session
        assert answer.get("ticket", {}).get("number", "").startswith("K"), answer
        assert victim.may_publish(T.request("kiosk-K2", "status"))  # K2 still publishes
        watcher.subscribe(T.availability("+"))  # again: the retained states as they are now

        assert not victim.drops, f"kiosk-K2 was dropped: {victim.drops}"
        assert "offline" not in watcher.states(HALL_ONLINE), watcher.states(HALL_ONLINE)
        assert "offline" not in watcher.states(T.availability("kiosk-K2"))
        log = hb.log()
        assert "Client hall already connected" not in log, log
        assert "Client kiosk-K2 already connected" not in log, log
        assert "disconnected from broker" not in hall.log(), hall.log()
        assert watcher.states(HALL_ONLINE)[-1] == "online"
    finally:
        for client in [*attackers, victim, watcher]:
            client.close()
        hall.stop()


def _primary_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_websockets_listener_is_loopback_only_and_takes_only_display(
    hall_broker: GeneratedBroker,
) -> None:
    hb = hall_broker
    # bound to loopback, not to the LAN address (the TLS listener shows that one is live)
    assert _reachable(LAN, hb.tls_port)
    assert not _reachable(LAN, hb.ws_port), "the websockets listener answers on the LAN address"
    lan = _primary_address()
    if lan is not None:
        assert not _reachable(lan, hb.ws_port), f"the websockets listener answers on {lan}"
    # by interface: given 127.0.0.1, Mosquitto 2.0.11's libwebsockets binds every address
    conf = (hb.out / "mosquitto.conf").read_text()
    assert f"listener {hb.ws_port} lo\nprotocol websockets" in conf

    refused = []
    for user in [u for u in users(load(SITE)) if u != "display"]:
        attempt = Raw(hb, "ws", user, user=user, password=hb.password(user))
        refused.append(attempt)
        assert not attempt.connected, f"{user} got in on the websockets listener"
    for attempt_args in ({"user": "display", "password": "guessed"}, {}):
        attempt = Raw(hb, "ws", "display", **attempt_args)  # type: ignore[arg-type]
        refused.append(attempt)
        assert not attempt.connected, attempt.name
    for attempt in refused:
        attempt.close()

    # the one it is for: `display`, reading only
    hall = Raw(hb, "loopback", "hall", user="hall", password=hb.password("hall"))
    display = Raw(hb, "ws", "display", user="display", password=hb.password("display"))
    try:
        assert hall.connected and display.connected
        assert display.may_read(T.hall_state, hall)
        assert not display.may_read(T.request("kiosk-K1", "issue"), hall)
        assert not display.may_publish(T.window_state(1))
        assert not display.drops and not hall.drops
    finally:
        display.close()
        hall.close()


def test_a_client_certificate_is_its_owner_whatever_name_it_sends(
    hall_broker: GeneratedBroker, tmp_path: Path
) -> None:
    hb = hall_broker
    hall = Raw(hb, "loopback", "hall", user="hall", password=hb.password("hall"))
    # as the kiosk daemon logs in: its name, password and certificate
    k2 = Raw(
        hb, "tls", "kiosk-K2", user="kiosk-K2", password=hb.password("kiosk-K2"), cert="kiosk-K2"
    )
    tried: list[Raw] = []
    try:
        assert hall.connected and k2.connected
        # kiosk-K1's certificate with kiosk-K2's name and password: still kiosk-K1
        k1_as_k2 = Raw(
            hb,
            "tls",
            "kiosk-K2",
            user="kiosk-K2",
            password=hb.password("kiosk-K2"),
            cert="kiosk-K1",
        )
        tried.append(k1_as_k2)
        assert k1_as_k2.connected
        assert not k1_as_k2.may_publish(T.request("kiosk-K2", "issue"))
        assert not k1_as_k2.may_publish(T.availability("kiosk-K2"))
        assert not k1_as_k2.may_read(T.reply("kiosk-K2"), hall)
        assert k1_as_k2.may_publish(T.request("kiosk-K1", "issue"))  # it is kiosk-K1
        # the display's certificate with the hall's name and password: still display
        display_as_hall = Raw(
            hb, "tls", "hall", user="hall", password=hb.password("hall"), cert="display"
        )
        tried.append(display_as_hall)
        assert display_as_hall.connected
        assert not display_as_hall.may_publish(T.window_state(1))
        assert not display_as_hall.may_publish(HALL_ONLINE)
        assert not display_as_hall.may_read(T.request("kiosk-K1", "issue"), hall)
        # the hall's name and password without a certificate, or with one the hall's CA
        # did not sign (CN=hall): no TLS session at all
        rogue = tmp_path / "rogue"
        key, cert = _ca(rogue / "ca", "rogue")
        _issue(key, cert, rogue / "client.crt", rogue / "client.key", "hall", (), server=False)
        for login in (
            {"user": "hall", "password": hb.password("hall")},
            {"user": "hall", "password": hb.password("hall"), "cert": "hall", "cert_folder": rogue},
        ):
            attempt = Raw(hb, "tls", "hall", **login)  # type: ignore[arg-type]
            tried.append(attempt)
            assert not attempt.connected, attempt.name

        # the owners still work, and were never disturbed (a client knocked off hears of
        # it before the answers to these round trips)
        assert k2.may_publish(T.request("kiosk-K2", "issue"))
        assert k2.may_read(T.reply("kiosk-K2"), hall)
        assert hall.may_publish(T.window_state(1))
        assert not hall.drops and not k2.drops, (hall.drops, k2.drops)
    finally:
        for client in [*tried, k2, hall]:
            client.close()


def test_read_only_programs_run_side_by_side(hall_broker: GeneratedBroker, tmp_path: Path) -> None:
    """The screens gateway (`display`, websockets), the demo's view (`monitor`) and
    `quhao ctl` (`ctl`) each have their own user: none takes the others' session."""
    hb = hall_broker
    hall = _hall(hb, tmp_path)
    display = Raw(hb, "ws", "display", user="display", password=hb.password("display"))
    password, _ = credentials(hb.out / "credentials", MONITOR_USER)  # as cli/demo.py does
    monitor = Bus(
        f"mqtt://127.0.0.1:{hb.port}", MONITOR_USER, username=MONITOR_USER, password=password
    )
    monitor_drops: list[object] = []
    handle_disconnect = monitor.client.on_disconnect

    def dropped(*args: Any) -> None:
        monitor_drops.append(args[3])
        handle_disconnect(*args)

    monitor.client.on_disconnect = dropped
    monitor.start()
    try:
        assert display.connected
        display.subscribe(T.hall_state)
        for _ in range(2):
            ctl = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "ctl",
                    "--config",
                    str(SITE),
                    "--broker",
                    f"mqtt://127.0.0.1:{hb.port}",
                    "--credentials",
                    str(hb.out / "credentials"),
                    "--once",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert ctl.returncode == 0 and "window" in ctl.stdout, ctl.stdout + ctl.stderr
        # A round trip on each: a client knocked off by ctl would have heard of it first.
        display.subscribe(T.window_state(1))
        sent = monitor.client.publish(f"quhao/{SITE_ID}/round-trip", b"{}", qos=1)
        sent.wait_for_publish(5)  # its PUBACK (it may say "not authorised": no matter)
        assert sent.is_published()
        assert not display.drops and not monitor_drops, (display.drops, monitor_drops)
        assert monitor.connected.is_set()
        log = hb.log()
        assert "already connected" not in log, log
        for user in ("display", "monitor", "ctl"):
            assert f" as {user} (" in log and f"u'{user}')" in log, user
    finally:
        monitor.stop()
        display.close()
        hall.stop()


def test_voice_hears_the_calls_and_nothing_else_in_its_own_session(
    hall_broker: GeneratedBroker,
) -> None:
    """`quhao voice` (user `voice`) beside the screens gateway (`display`): each keeps its
    session, and the announcer may read the two call events and nothing else."""
    from screens.voice.announcer import CALL_EVENTS

    hb = hall_broker
    hall = Raw(hb, "loopback", "hall", user="hall", password=hb.password("hall"))
    display = Raw(hb, "ws", "display", user="display", password=hb.password("display"))
    voice = Raw(hb, "loopback", "voice", user="voice", password=hb.password("voice"))
    try:
        assert hall.connected and display.connected and voice.connected
        for kind in CALL_EVENTS:  # the ACL names the events the announcer subscribes to
            assert voice.may_read(T.event(kind), hall), kind
        for topic in (T.event("ticket.issued"), T.window_state(1), T.hall_state):
            assert not voice.may_read(topic, hall), topic
        assert not voice.may_publish(T.request("voice", "call"))
        assert not voice.may_publish(T.event("ticket.called"))
        assert display.may_read(T.event("ticket.called"), hall)  # still there, still served
        assert not display.drops and not voice.drops, (display.drops, voice.drops)
    finally:
        for client in (voice, display, hall):
            client.close()

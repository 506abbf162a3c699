"""The one MQTT adapter every daemon uses: paho-mqtt 2.x, MQTT v5, our conventions.

- TCP_NODELAY on the client socket: without it each request/response costs
  40-90 ms of Nagle + delayed ACK (measured on loopback here; with it on both
  ends a round trip is p50 ~0.9 ms).
- Subscriptions are remembered and renewed on every (re)connect.
- Availability: retained `online` on connect, `offline` as the Last Will and on
  a clean stop (a clean disconnect does not fire the Will).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from quhao.wire import encode

log = logging.getLogger("quhao.mqtt")

MAX_TEMPLATES = 64  # Properties templates kept per Bus: (reply topic, expiry) pairs in use


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Broker:
        """`mqtt://[user[:password]@]host[:port]` or `mqtts://…` (TLS, default port 8883)."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str | None = None
    key: str | None = None


def credentials(root: str | Path | None, user: str) -> tuple[str | None, TlsFiles | None]:
    """A user's password and TLS files, from a credentials folder in either layout.

    - `quhao broker gen`'s: `root/{user}/password`, `ca.crt`, `client.crt`, `client.key`;
    - systemd's, where a unit loads that user's folder as one credential
      (`LoadCredential={user}:/etc/quhao/credentials/{user}`) and `root` is
      `$CREDENTIALS_DIRECTORY`: systemd.exec(5) says "If an absolute path referring
      to a directory is specified, every file in that directory (recursively) will
      be loaded as a separate credential. The ID for each credential will be the
      provided ID suffixed with "_$FILENAME"", so the files are
      `root/{user}_password`, `root/{user}_ca.crt`, `root/{user}_client.crt`,
      `root/{user}_client.key`.

    A missing file is None (no password: log in without one; no CA: no TLS files).
    """
    if root is None:
        return None, None
    base = Path(root)
    folder = base / user

    def file(name: str) -> Path | None:
        path = folder / name if folder.is_dir() else base / f"{user}_{name}"
        return path if path.is_file() else None

    password_file = file("password")
    password = password_file.read_text().strip() if password_file else None
    ca = file("ca.crt")
    if ca is None:
        return password, None
    cert, key = file("client.crt"), file("client.key")
    return password, TlsFiles(str(ca), str(cert) if cert else None, str(key) if key else None)


def device_bus(
    broker: Broker | str,
    device: str,
    availability_topic: str,
    credentials_dir: str | Path | None = None,
) -> Bus:
    """A device's connection: its own user name, password and TLS files, and a Last Will."""
    password, tls = credentials(credentials_dir, device)
    return Bus(broker, device, password=password, tls=tls, availability_topic=availability_topic)


class Bus:
    def __init__(
        self,
        broker: Broker | str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        availability_topic: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.broker = Broker.parse(broker) if isinstance(broker, str) else broker
        self.client_id = client_id
        self.availability_topic = availability_topic
        self.connected = threading.Event()
        self._stopping = False
        self._inline = False
        self._next_reconnect = 0.0
        self._subscriptions: dict[str, SubscribeOptions] = {}
        self._on_connect_hooks: list[Callable[[], None]] = []
        self._templates: dict[tuple[str | None, int | None], Properties] = {}
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        # A device logs in under its own name: the ACL is written for that name.
        user = username or self.broker.username or (client_id if password else None)
        if user:
            client.username_pw_set(user, password or self.broker.password)
        if self.broker.tls:
            if tls is None:
                raise ValueError("an mqtts:// broker needs TLS files: give --credentials")
            client.tls_set(
                ca_certs=tls.ca,
                certfile=tls.cert,
                keyfile=tls.key,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if availability_topic:
            client.will_set(availability_topic, encode({"state": "offline"}), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.on_socket_open = _no_delay
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        self.client = client

    # ---- lifecycle --------------------------------------------------------

    def start(self, timeout: float = 10.0, required: bool = True) -> None:
        """Connect and run the network loop in a thread; returns once connected.

        Not `required` (a daemon): if the broker is not there yet, say so and return;
        the network thread keeps trying."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=15)
        self.client.loop_start()
        if self.connected.wait(timeout):
            return
        where = f"{self.broker.host}:{self.broker.port}"
        if required:
            self.client.loop_stop()
            raise ConnectionError(f"no MQTT connection to {where} within {timeout:g} s")
        log.error("no MQTT connection to %s yet as %s; still trying", where, self.client_id)

    def connect_inline(self, timeout: float = 10.0, required: bool = True) -> None:
        """Connect without a network thread: the caller drives I/O with `loop_once`.

        One thread then owns both the socket and the caller's state, and a publish
        writes to the socket at once instead of waking a network thread. Not
        `required` (a daemon): if the broker is not there yet, say so and return;
        `loop_once` keeps trying.
        """
        self._inline = True
        where = f"{self.broker.host}:{self.broker.port}"
        deadline = time.monotonic() + timeout
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=15)
        except OSError as exc:
            log.warning("MQTT connection to %s failed: %s; retrying", where, exc)
        while not self.connected.is_set() and time.monotonic() < deadline:
            self.loop_once(0.1)
        if self.connected.is_set():
            return
        if required:
            raise ConnectionError(f"no MQTT connection to {where} within {timeout:g} s")
        log.error("no MQTT connection to %s yet as %s; still trying", where, self.client_id)

    def loop_once(self, timeout: float) -> None:
        """One round of network I/O (inline mode); reconnects after a lost connection."""
        rc = self._io(timeout)
        if rc == paho.MQTT_ERR_SUCCESS:
            return
        if time.monotonic() < self._next_reconnect:
            time.sleep(min(timeout, 0.1))
            return
        self._next_reconnect = time.monotonic() + 1.0
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning("reconnect to %s:%s failed: %s", self.broker.host, self.broker.port, exc)

    def _io(self, timeout: float) -> MQTTErrorCode:
        """What paho's `loop()` does — wait for the socket, read a packet, write what
        waits, keepalive — without its socketpair: `loop()` makes one to wake a network
        thread, and from then on every publish writes a byte into it (a system call per
        message, and a wasted wake-up) for a thread that inline mode does not have."""
        client = self.client
        sock = client.socket()
        if sock is None:
            return paho.MQTT_ERR_NO_CONN
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted, in hand
        buffered = pending() if pending is not None else 0
        try:
            readable, writable, _ = select.select(
                [sock], [sock] if client.want_write() else [], [], 0.0 if buffered else timeout
            )
        except (OSError, ValueError, TypeError):  # closed under us: a lost connection
            return paho.MQTT_ERR_CONN_LOST
        if readable or buffered:
            rc = client.loop_read()
            if rc or client.socket() is None:
                return rc
        if writable:
            rc = client.loop_write()
            if rc or client.socket() is None:
                return rc
        return client.loop_misc()

    def stop(self) -> None:
        if self.availability_topic and self.connected.is_set():
            info = self.publish(self.availability_topic, {"state": "offline"}, retain=True)
            if self._inline:
                deadline = time.monotonic() + 2.0
                while not info.is_published() and time.monotonic() < deadline:
                    self._io(0.05)
            else:
                info.wait_for_publish(2.0)
        self._stopping = True
        self.client.disconnect()
        if self._inline:
            self._io(0.1)  # flush the DISCONNECT
        else:
            self.client.loop_stop()

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Run hook after every (re)connect, after subscriptions are renewed."""
        self._on_connect_hooks.append(hook)

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused connection as %s: %s", self.client_id, reason)
            return
        for topic_filter, options in self._subscriptions.items():
            client.subscribe(topic_filter, options=options)
        if self.availability_topic:
            self.publish(self.availability_topic, {"state": "online"}, retain=True)
        self.connected.set()
        log.info("connected to %s:%s as %s", self.broker.host, self.broker.port, self.client_id)
        for hook in self._on_connect_hooks:
            hook()

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("disconnected from broker (%s); reconnecting", reason)
        self.connected.clear()

    # ---- messages ---------------------------------------------------------

    def subscribe(
        self,
        topic_filter: str,
        handler: Callable[[Message], None],
        qos: int = 1,
        *,
        retain_as_published: bool = False,
    ) -> None:
        def callback(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
            props = getattr(msg, "properties", None)
            try:
                handler(
                    Message(
                        topic=msg.topic,
                        payload=bytes(msg.payload),  # paho types it bytes | bytearray
                        retain=bool(msg.retain),
                        response_topic=getattr(props, "ResponseTopic", None),
                        correlation=getattr(props, "CorrelationData", None),
                    )
                )
            except Exception:  # a handler bug must not kill the network thread
                log.exception("handler for %s failed", msg.topic)

        self.client.message_callback_add(topic_filter, callback)
        # retainAsPublished: a subscriber can tell a retained message from a live one even
        # when it arrives live (the hall ignores retained requests).
        options = SubscribeOptions(qos=qos, retainAsPublished=retain_as_published)
        self._subscriptions[topic_filter] = options
        if self.connected.is_set():
            self.client.subscribe(topic_filter, options=options)

    def unsubscribe(self, topic_filter: str) -> None:
        """Stop receiving (and renewing) a subscription; its handler stays, for what the
        broker had already sent."""
        if self._subscriptions.pop(topic_filter, None) is not None and self.connected.is_set():
            self.client.unsubscribe(topic_filter)

    def publish(
        self,
        topic: str,
        payload: bytes | dict[str, Any] | list[Any],
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
    ) -> paho.MQTTMessageInfo:
        props = None
        if response_topic or correlation or expiry_s:
            props = self._properties(response_topic, expiry_s)
            if correlation:
                props.CorrelationData = correlation
        data = payload if isinstance(payload, bytes) else encode(payload)
        return self.client.publish(topic, data, qos=qos, retain=retain, properties=props)

    def _properties(self, response_topic: str | None, expiry_s: int | None) -> Properties:
        """A fresh PUBLISH Properties with these two set: a copy of one made once per pair.

        paho builds its property tables in every Properties' __init__ and checks each name
        set against them: ~0.1 ms for a request's three, on every request and answer. A
        copy shares the tables (never changed after __init__) and keeps the values; each
        message still gets its own object, as paho keeps it with a QoS 1 message to resend.
        """
        key = (response_topic, expiry_s)
        template = self._templates.get(key)
        if template is None:
            # paho's Properties.__init__ is the one unannotated call in its typed API
            template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                template.ResponseTopic = response_topic
            if expiry_s:
                template.MessageExpiryInterval = expiry_s
            if len(self._templates) < MAX_TEMPLATES:
                self._templates[key] = template
        return copy.copy(template)


def _no_delay(client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
    # Not a TCP socket (e.g. a websockets wrapper): nothing to tune.
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

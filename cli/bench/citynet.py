"""A city on one machine, for the tests and `quhao bench city`: a PostgreSQL cluster, the
city broker as `quhao city broker` writes it (TLS listener for bridges, own user per
hall), hall brokers each carrying the generated bridges of its halls (persistent
session, QoS 1, persistence on), and a TCP relay in every bridge's path so a test can cut
the link and mend it. Nothing of ours is replaced: the daemons run as processes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import selectors
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from city.schema import migrate
from quhao.broker import Mosquitto, free_ports, wait_for_port
from quhao.citybroker import generate
from quhao.config.city import load_city
from quhao.pgcluster import PgCluster


class Relay:
    """A TCP relay 127.0.0.1:port → target, in one thread; `cut()` drops every connection
    and refuses new ones until `mend()` — a network cut as the bridge sees it."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.open = True
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self.thread.start()

    def cut(self) -> None:
        with self.lock:
            self.open = False
            for sock in list(self.pairs):
                self._drop(sock)

    def mend(self) -> None:
        with self.lock:
            self.open = True

    def close(self) -> None:
        self.stopping = True
        self.cut()
        self.thread.join(2)
        self.listener.close()

    def _drop(self, sock: socket.socket) -> None:
        other = self.pairs.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self.pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(s)
            s.close()

    def _run(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.1):
                with self.lock:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.listener:
                        self._accept()
                    elif sock in self.pairs:
                        self._forward(sock)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        if not self.open:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pairs[client], self.pairs[upstream] = upstream, client
        self.selector.register(client, selectors.EVENT_READ, None)
        self.selector.register(upstream, selectors.EVENT_READ, None)

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        other = self.pairs[sock]
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._drop(sock)


def hall_broker_conf(folder: Path, port: int, bridges: list[Path]) -> Path:
    """A hall broker as in a hall, as far as the bridge goes: persistence on, the
    generated bridge files included; an anonymous loopback listener for the test's
    devices (a hall's own users and ACL are `quhao broker gen`'s, tested elsewhere)."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    lines = [
        "per_listener_settings false",
        "allow_anonymous true",
        *(["user root"] if os.geteuid() == 0 else []),
        "persistence true",
        f"persistence_location {data}/",
        "autosave_interval 1",
        "max_inflight_messages 100",
        "max_queued_messages 100000",
        "max_packet_size 300000",
        "set_tcp_nodelay true",
        f"log_dest file {folder}/mosquitto.log",
        "log_type error",
        "log_type warning",
        "log_type notice",
        f"listener {port} 127.0.0.1",
    ]
    conf = folder / "mosquitto.conf"
    bridge_text = "\n\n".join(p.read_text() for p in bridges)
    conf.write_text("\n".join(lines) + "\n\n" + bridge_text + "\n")
    return conf


@dataclass
class CityNet:
    root: Path
    sites: list[list[str]]  # hall ids per hall broker
    site_files: dict[str, Path] = field(default_factory=dict)
    fsync: bool = True

    def start(self) -> CityNet:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pg = PgCluster(self.root / "pg", fsync=self.fsync)
        self.dsn = self.pg.create_database("city")
        self.city_port, self.city_tls_port = free_ports(2)
        self.relays: dict[str, Relay] = {}
        self.city_toml = self.root / "city.toml"
        halls = "".join(
            f'\n[[halls]]\nid = "{site}"\n'
            + (f'site_file = "{self.site_files[site]}"\n' if site in self.site_files else "")
            for group in self.sites
            for site in group
        )
        self.city_toml.write_text(
            f'[city]\nname = "测试市"\ndatabase = "{self.dsn}"\n'
            f'broker = "mqtt://127.0.0.1:{self.city_port}"\n'
            f'credentials = "{self.root / "citybroker" / "credentials"}"\n'
            "flush_ms = 50\n" + halls
        )
        config, _ = load_city(self.city_toml)
        conf = generate(
            config,
            self.root / "citybroker",
            port=self.city_port,
            tls_port=self.city_tls_port,
            bind="127.0.0.1",
            hosts=("127.0.0.1",),
            address="127.0.0.1:0",  # each bridge goes through its relay (below)
            run_as="root" if os.geteuid() == 0 else "mosquitto",
        )
        self.city_broker_conf = conf
        self.city_broker = Mosquitto(
            workdir=self.root / "citybroker", port=self.city_port, conf=conf
        )
        wait_for_port(self.city_tls_port)
        migrate(self.dsn, dt.date.today(), 2)
        self.hall_brokers: list[Mosquitto] = []
        self.hall_broker_of: dict[str, int] = {}
        for index, group in enumerate(self.sites):
            folder = self.root / f"hallbroker{index}"
            folder.mkdir(parents=True, exist_ok=True)
            bridges = []
            for site in group:
                relay = self.relays[site] = Relay(self.city_tls_port)
                text = (self.root / "citybroker" / "bridges" / f"{site}.conf").read_text()
                bridge = folder / f"bridge-{site}.conf"
                bridge.write_text(text.replace("127.0.0.1:0", f"127.0.0.1:{relay.port}"))
                bridges.append(bridge)
                self.hall_broker_of[site] = index
            (port,) = free_ports(1)
            conf = hall_broker_conf(folder, port, bridges)
            self.hall_brokers.append(Mosquitto(workdir=folder, port=port, conf=conf))
        return self

    def hall_url(self, site: str) -> str:
        return self.hall_brokers[self.hall_broker_of[site]].url

    def city_password(self) -> str:
        path = self.root / "citybroker" / "credentials" / "city" / "password"
        return path.read_text().strip()

    def city_url(self) -> str:
        return f"mqtt://city:{self.city_password()}@127.0.0.1:{self.city_port}"

    def restart_city_broker(self, kill: bool = True) -> None:
        if kill:
            self.city_broker.proc.kill()
            self.city_broker.proc.wait(10)
        else:
            self.city_broker.close()
        self.city_broker = Mosquitto(
            workdir=self.root / "citybroker", port=self.city_port, conf=self.city_broker_conf
        )
        wait_for_port(self.city_tls_port)

    def close(self) -> None:
        for relay in getattr(self, "relays", {}).values():
            relay.close()
        for broker in getattr(self, "hall_brokers", []):
            broker.close()
        if hasattr(self, "city_broker"):
            self.city_broker.close()
        if hasattr(self, "pg"):
            self.pg.close()

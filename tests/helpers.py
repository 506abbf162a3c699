"""Test harness: real processes and real MQTT clients, nothing of ours replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quhao.broker import Mosquitto, free_ports, wait_for_port
from quhao.brokergen import generate
from quhao.config import load
from quhao.mqtt import Bus, Message
from quhao.rpc import HallClient
from quhao.topics import Topics
from quhao.wire import decode_object

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "tests" / "sites" / "small.toml"
SITE_ID = "testhall"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def wait_for_reader(reader: str, card: bool, timeout: float = 5.0) -> None:
    """Until pcscd reports this reader with a card on it (or empty). pcscd asks vpcd
    every 400 ms, so a card put on or taken off shows after up to one of its polls —
    and every PC/SC client (the daemons too) hears of it at that same poll."""
    from smartcard import scard

    rc, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert rc == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(rc)
    try:
        known = scard.SCARD_STATE_UNAWARE
        deadline = time.monotonic() + timeout
        while True:
            rc, states = scard.SCardGetStatusChange(context, 100, [(reader, known)])
            if rc == scard.SCARD_S_SUCCESS:
                known = states[0][1] & ~scard.SCARD_STATE_CHANGED
                if bool(known & scard.SCARD_STATE_PRESENT) == card:
                    return
            if time.monotonic() > deadline:
                state = "a card" if card else "no card"
                raise AssertionError(f"pcscd did not report {state} on {reader} in {timeout:g} s")
    finally:
        scard.SCardReleaseContext(context)


class Daemon:
    """A `quhao …` process with its stderr in a file the test can read.

    `env`: variables for this process on top of the test's own environment (passed to
    it, never set in the test process)."""

    def __init__(
        self, args: list[str], log_path: Path, ready: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.args, self.log_path, self.ready = args, log_path, ready
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self, timeout: float = 15.0) -> Daemon:
        return self.launch().wait_ready(timeout)

    def launch(self) -> Daemon:
        """Start the process without waiting for it (see wait_ready): several daemons
        then start side by side."""
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *self.args],
            stdout=log,
            stderr=log,
            cwd=ROOT,
            env=env,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 15.0) -> Daemon:
        proc = self.proc
        assert proc is not None, "launch() first"
        wait_until(
            lambda: self.ready in self.log()[self._offset :] or proc.poll() is not None,
            timeout,
            f"{self.args[0]} to be ready",
        )
        assert proc.poll() is None, f"{self.args[0]} exited:\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        return self.proc.wait(15)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        return self.signal(signal.SIGTERM)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def hall_daemon(
    broker_url: str,
    state_dir: Path,
    config: Path = SITE,
    clock: str = "system",
    env: Mapping[str, str] | None = None,
) -> Daemon:
    return Daemon(
        [
            "hall",
            "--config",
            str(config),
            "--broker",
            broker_url,
            "--state-dir",
            str(state_dir),
            "--clock",
            clock,
            "--log-level",
            "DEBUG",
        ],
        state_dir / "hall.log",
        "serving",
        env,
    )


class Device:
    """An MQTT client acting as one configured device (kiosk or counter)."""

    def __init__(self, broker_url: str, name: str, site: str = SITE_ID) -> None:
        self.name = name
        self.topics = Topics(site)
        self.bus = Bus(broker_url, f"test-{name}")
        self.hall = HallClient(self.bus, self.topics, name)
        self.bus.start()

    def request(self, action: str, rid: str | None = None, **payload: Any) -> dict[str, Any]:
        return self.hall.request(action, payload, rid=rid, timeout=3.0)

    def close(self) -> None:
        self.bus.stop()


class Recorder:
    """Subscribes to topic filters and keeps every message, decoded when JSON."""

    def __init__(self, broker_url: str, *filters: str, client_id: str = "test-recorder") -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()
        self.bus = Bus(broker_url, client_id)
        for topic_filter in filters:
            self.bus.subscribe(topic_filter, self._keep)
        self.bus.start()

    def _keep(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        with self.lock:
            found = [m for m in self.messages if m.topic == topic]
        return [decode_object(m.payload) for m in found]

    def last(self, topic: str) -> dict[str, Any] | None:
        found = self.payloads(topic)
        return found[-1] if found else None

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda p: True,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        return wait_until(
            lambda: next((p for p in reversed(self.payloads(topic)) if predicate(p)), None),
            timeout,
            f"a message on {topic}",
        )

    def close(self) -> None:
        self.bus.stop()


@dataclass
class GeneratedBroker:
    """Mosquitto running the configuration `quhao broker gen` writes for a site."""

    broker: Mosquitto
    out: Path
    port: int
    tls_port: int
    ws_port: int

    @property
    def credentials(self) -> Path:
        return self.out / "credentials"

    def password(self, user: str) -> str:
        return (self.credentials / user / "password").read_text().strip()

    def log(self) -> str:
        return self.broker.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.broker.close()


def generated_broker(site: Path, out: Path, lan: str = "127.0.0.1") -> GeneratedBroker:
    """Generate a hall's broker configuration into `out` and start it; `lan` stands in
    for the hall server's LAN address (any of 127/8 is local)."""
    port, tls_port, ws_port = free_ports(3)
    conf = generate(
        load(site),
        out,
        port=port,
        tls_port=tls_port,
        ws_port=ws_port,
        lan_bind=lan,
        hosts=(lan,) if lan != "127.0.0.1" else (),
        run_as="root" if os.geteuid() == 0 else "mosquitto",
    )
    broker = Mosquitto(workdir=out, port=port, conf=conf)
    try:
        wait_for_port(tls_port, host=lan)
        wait_for_port(ws_port)
    except BaseException:
        broker.close()
        raise
    return GeneratedBroker(broker, out, port, tls_port, ws_port)

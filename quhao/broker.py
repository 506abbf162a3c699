"""Start a private Mosquitto from a file in broker-config/ (tests, benchmarks, demo)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from quhao.processes import stop

BROKER_CONFIG_DIR = Path(__file__).resolve().parent.parent / "broker-config"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports for listeners.

    Taken below Linux's ephemeral range (32768-60999): a port the kernel hands out
    for bind(0) can meanwhile become the source port of some client's connection,
    and then the server that was to listen on it cannot.
    """
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(chosen) < count:
            port = random.randint(20000, 32000)
            if port in chosen:
                continue
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            chosen.append(port)
        return chosen
    finally:
        for sock in held:
            sock.close()


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s") from exc
            time.sleep(0.02)


def write_dev_conf(port: int, workdir: Path, template: str = "dev.conf") -> Path:
    """broker-config/dev.conf with its port filled in, for a development broker in the
    foreground: on 127.0.0.1:`port`, anonymous, no persistence, logging to stderr (as
    root Mosquitto drops to its own user, which could not write a log file here)."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = (BROKER_CONFIG_DIR / template).read_text().splitlines(keepends=True)
    text = "".join("log_dest stderr\n" if x.startswith("log_dest ") else x for x in lines)
    conf = workdir / "mosquitto.conf"
    conf.write_text(text.replace("@PORT@", str(port)).replace("@DIR@", str(workdir)))
    return conf


class Mosquitto:
    """A mosquitto process on a free loopback port, stopped on close()."""

    def __init__(
        self,
        template: str | Path = "dev.conf",
        workdir: str | Path | None = None,
        port: int | None = None,
        conf: Path | None = None,
    ) -> None:
        """From a template in broker-config/ (ports filled in), or a ready `conf` whose
        loopback listener is `port` (as written by `quhao broker gen`)."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise FileNotFoundError("mosquitto is not installed (make deps installs it)")
        self.port = port or free_port()
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="quhao-mosquitto-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        if conf is not None:
            self.conf = conf
        else:
            source = Path(template)
            if not source.is_absolute() and not source.exists():
                source = BROKER_CONFIG_DIR / source
            text = source.read_text().replace("@PORT@", str(self.port))
            self.conf = self.dir / "mosquitto.conf"
            self.conf.write_text(text.replace("@DIR@", str(self.dir)))
        self.log_path = self.dir / "mosquitto.out"
        with self.log_path.open("ab") as log:  # a pipe nobody reads would block a chatty broker
            self.proc = subprocess.Popen(
                [binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> Mosquitto:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

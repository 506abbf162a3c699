"""The processes a chaos run starts and kills: the hall, Mosquitto, the load."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli.chaos.clients import LoadSpec, load_process
from quhao.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent.parent
READY = b") serving "  # the hall's log line once it is connected and serving


class HallProc:
    """`quhao hall` as a child process, its stderr appended to `log`."""

    def __init__(
        self, config: Path, broker_url: str, state_dir: Path, log: Path, clock: str = "system"
    ) -> None:
        self.config, self.broker_url, self.state_dir = config, broker_url, state_dir
        self.log, self.clock = log, clock
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def spawn(self, *extra: str) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "hall",
                    "--config",
                    str(self.config),
                    "--broker",
                    self.broker_url,
                    "--state-dir",
                    str(self.state_dir),
                    "--clock",
                    self.clock,
                    "--log-level",
                    "INFO",
                    *extra,
                ],
                stdout=log,
                stderr=log,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self.proc

    def new_output(self) -> bytes:
        """What the current process has logged so far."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(self._offset)
                return handle.read()
        except FileNotFoundError:
            return b""

    def start(self, *extra: str, timeout: float = 60.0) -> bool:
        """Spawn and wait until it serves; False (and the process gone) if it exits."""
        proc = self.spawn(*extra)
        deadline = time.monotonic() + timeout
        seen = self._offset
        tail = b""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with self.log.open("rb") as handle:
                handle.seek(seen)
                chunk = handle.read()
            seen += len(chunk)
            tail = tail[-200:] + chunk
            if READY in tail:
                return True
            time.sleep(0.01)
        self.kill()
        raise TimeoutError(f"the hall did not serve within {timeout:g} s; see {self.log}")

    def refusal(self, *extra: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run a hall that is expected not to start: (exit status, its `quhao hall:` line).
        If it starts serving instead, it is killed and the status is -1."""
        proc = self.spawn(*extra)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if READY in self.new_output() or time.monotonic() > deadline:
                self.kill()
                return -1, "it started"
            time.sleep(0.02)
        lines = self.new_output().decode("utf-8", "replace").splitlines()
        said = [line for line in lines if line.startswith("quhao hall: ")]
        return proc.returncode, " | ".join(said)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def kill(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM; the exit status (0 for a clean stop)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.proc.returncode


class Broker:
    """A private Mosquitto (broker-config/dev.conf) that can be killed and restarted on
    the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.mosquitto = Mosquitto(workdir=workdir)
        self.port = self.mosquitto.port

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def restart(self) -> None:
        """SIGKILL and start again on the same port (the dev broker keeps nothing)."""
        self.mosquitto.proc.kill()
        self.mosquitto.proc.wait()
        for attempt in range(50):
            try:
                self.mosquitto = Mosquitto(workdir=self.workdir, port=self.port)
                return
            except TimeoutError:
                if attempt == 49:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.mosquitto.close()


class Load:
    """The load of one phase: one process per kiosk and per counter."""

    def __init__(self, specs: list[LoadSpec]) -> None:
        ctx = self.ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.readies = [ctx.Event() for _ in specs]
        self.procs = [
            ctx.Process(target=load_process, args=(spec, self.stop, ready), daemon=True)
            for spec, ready in zip(specs, self.readies, strict=True)
        ]

    def start(self, timeout: float = 60.0) -> None:
        for proc in self.procs:
            proc.start()
        deadline = time.monotonic() + timeout
        for ready in self.readies:
            if not ready.wait(max(0.1, deadline - time.monotonic())):
                raise TimeoutError("a load process did not connect")

    def finish(self, timeout: float = 120.0) -> int:
        """Ask every client to stop after its current request; how many had to be killed."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        killed = 0
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
                killed += 1
        return killed

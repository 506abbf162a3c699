"""The city database's connection in a thread of its own, so that PostgreSQL writes one
batch while the daemon's loop reads and checks the next (the loop would otherwise wait
for every COPY and commit: about half its time under load).

The loop still owns all the state (city/daemon.py): it hands the worker one job at a
time — a function of the `Writer`, e.g. "write this batch" — and collects each result,
in order, in its own thread. The worker holds nothing but the connection: no job runs
beside another, and no other thread touches the connection.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from city.writer import Writer

log = logging.getLogger("quhao.city.db")

Job = Callable[[Writer], Any]


@dataclass(frozen=True)
class Done:
    """A finished job: what it returned, or the exception it raised."""

    tag: Any
    value: Any
    error: BaseException | None
    seconds: float


class DbWorker:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer  # touched by the worker thread only, from now on
        self._jobs: queue.SimpleQueue[tuple[Any, Job] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self._wake = threading.Event()  # set when a job finishes
        self.outstanding = 0  # jobs submitted and not collected (the loop's count)
        self._thread = threading.Thread(target=self._run, name="city-db", daemon=True)
        self._thread.start()

    def submit(self, tag: Any, job: Job) -> None:
        self.outstanding += 1
        self._jobs.put((tag, job))

    @property
    def busy(self) -> bool:
        return self.outstanding > 0

    def wait(self, timeout: float) -> None:
        """Until a job finishes (or `timeout`): the loop's pause while it has nothing else."""
        self._wake.wait(timeout)

    def results(self) -> list[Done]:
        """The jobs finished since the last call, in the order they were submitted."""
        self._wake.clear()
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        self.outstanding -= len(out)
        return out

    def close(self, timeout: float = 10.0) -> None:
        """Finish the jobs handed over, then close the connection."""
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("database jobs still running after %g s; closing anyway", timeout)
        self.writer.close()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            tag, job = item
            started = time.perf_counter()
            try:
                value, error = job(self.writer), None
            except Exception as exc:  # handed back: the loop decides what it means
                value, error = None, exc
            self._done.put(Done(tag, value, error, time.perf_counter() - started))
            self._wake.set()

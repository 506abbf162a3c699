"""CPU time of the processes of `quhao bench city`, from /proc: what the city's side
(`quhao city`, PostgreSQL, the city broker) and the simulated halls' side (their
generators, hall brokers and the relays) spend while the city catches up, and what
PostgreSQL and the client spend on the bare insert. On one machine the halls' side
takes CPU a real city server never gives them; CPU seconds per event compare the city
with the bare insert whatever else runs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> list[str] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the fields after "(comm) "


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU of a process (all its threads), or of one of its threads."""
    path = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat")
    fields = _stat(path)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0


def with_children(pid: int) -> list[int]:
    """The process and every process below it (PostgreSQL's backends under its postmaster)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry / "stat")
            if fields:
                parents[int(entry.name)] = int(fields[1])
    out, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        out += children
        todo += children
    return out


def postmaster(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def main_thread_cpu() -> float:
    """This process's main thread (the bench's own client work, not its relay threads)."""
    return cpu_seconds(os.getpid(), threading.main_thread().native_id)


class Meter:
    """CPU seconds per named group of processes between `start` and `stop`."""

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]]) -> None:
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}

    def _snapshot(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()
        }

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        end = self._snapshot()
        self.seconds = {
            name: round(
                sum(cpu - self._start[name].get(pid, 0.0) for pid, cpu in end[name].items()), 2
            )
            for name in self.groups
        }
        return self.seconds

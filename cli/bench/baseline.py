"""Benchmark plumbing shared by the hall, kiosk and counter benchmarks.

Every figure is reported next to a bare baseline measured in the same run on
the same broker: an MQTT v5 echo responder that answers each request at once
(one process, one paho connection, like the hall). Absolute times on shared
machines are noise; the ratios are the result.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.queues
import multiprocessing.synchronize
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quhao.mqtt import Bus, Message
from quhao.processes import quhao
from quhao.rpc import HallClient
from quhao.topics import Topics

ECHO_SITE = "bench-echo"


@dataclass
class Run:
    """Latencies (seconds) of every measured request and the wall time of the whole run."""

    latencies: list[float]
    wall_s: float
    failures: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return self.pct(50) * 1000

    @property
    def p99_ms(self) -> float:
        return self.pct(99) * 1000

    @property
    def throughput(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "n": self.count,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 3),
            "per_s": round(self.throughput, 1),
            "failures": self.failures,
        }


def echo_responder(broker: str, ready: mp.synchronize.Event, stop: mp.synchronize.Event) -> None:
    """The baseline: answer every request on the echo site at once, copying correlation."""
    topics = Topics(ECHO_SITE)
    bus = Bus(broker, "bench-echo")

    def answer(message: Message) -> None:
        parsed = topics.parse_request(message.topic)
        if parsed:
            bus.publish(
                message.response_topic or topics.reply(parsed[0]),
                message.payload,
                correlation=message.correlation,
            )

    bus.subscribe(topics.request_filter, answer)
    bus.start()
    ready.set()
    stop.wait()
    bus.stop()


def start_echo(broker: str) -> tuple[mp.process.BaseProcess, mp.synchronize.Event]:
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=echo_responder, args=(broker, ready, stop), daemon=True)
    proc.start()
    if not ready.wait(15):
        raise RuntimeError("echo responder did not start")
    return proc, stop


RequestMaker = Callable[[int, int], tuple[str, dict[str, Any]]]  # (client, i) -> (action, body)
ClientResult = tuple[list[float], int, float]  # latencies, failures, when it finished


def _client(
    broker: str,
    site: str,
    device: str,
    index: int,
    count: int,
    warmup: int,
    maker_name: str,
    start_at: float,
    results: mp.queues.Queue[ClientResult],
) -> None:
    maker = REQUEST_MAKERS[maker_name]
    bus = Bus(broker, f"bench-{site}-{device}")
    client = HallClient(bus, Topics(site), device)
    bus.start()
    for i in range(warmup):
        action, body = maker(index, -1 - i)
        client.request(action, body, timeout=5.0)
    while time.time() < start_at:  # all clients start together
        time.sleep(0.001)
    latencies, failures = [], 0
    for i in range(count):
        action, body = maker(index, i)
        began = time.perf_counter()
        response = client.request(action, body, timeout=5.0)
        latencies.append(time.perf_counter() - began)
        if not response.get("ok", True):
            failures += 1
    bus.stop()
    results.put((latencies, failures, time.time()))


def run_clients(
    broker: str, site: str, devices: list[str], count: int, maker_name: str, warmup: int = 20
) -> Run:
    """Each device in its own process sends `count` sequential requests; all start together."""
    ctx = mp.get_context("spawn")
    results: mp.queues.Queue[ClientResult] = ctx.Queue()
    start_at = time.time() + 2.0 + 0.15 * len(devices)
    procs = [
        ctx.Process(
            target=_client,
            args=(broker, site, device, i, count, warmup, maker_name, start_at, results),
        )
        for i, device in enumerate(devices)
    ]
    for proc in procs:
        proc.start()
    collected = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
    latencies = [lat for lats, _, _ in collected for lat in lats]
    failures = sum(f for _, f, _ in collected)
    wall = max(end for _, _, end in collected) - start_at
    return Run(latencies, wall, failures)


def _echo_request(client: int, i: int) -> tuple[str, dict[str, Any]]:
    return "echo", {"n": i}


def _issue_request(client: int, i: int) -> tuple[str, dict[str, Any]]:
    # A distinct person for every ticket: the quota is not what is measured here.
    key = f"{client:08x}{i & 0xFFFFFFFF:08x}".ljust(32, "0")
    return "issue", {"service": "bench", "person": {"key": key, "age": 40}}


REQUEST_MAKERS: dict[str, RequestMaker] = {"echo": _echo_request, "issue": _issue_request}


class BareEcho:
    """The barest MQTT v5 request/response: one client, paho driven inline (no
    network thread), against the echo responder; one request at a time.
    Benchmarks interleave its round trips with their own samples, so both sides
    see the same moment of a shared machine."""

    def __init__(self, broker: str) -> None:
        self.topics = Topics(ECHO_SITE)
        self.bus = Bus(broker, "bench-bare-echo")
        self.replies: list[Message] = []
        self.bus.subscribe(self.topics.reply("bare"), self.replies.append)
        self.bus.connect_inline()
        for _ in range(20):
            self.bus.loop_once(0.005)  # let the subscription settle
        for _ in range(20):
            self.round_trip()  # warm-up

    def round_trip(self) -> float:
        seen = len(self.replies)
        began = time.perf_counter()
        self.bus.publish(
            self.topics.request("bare", "echo"),
            b'{"rid":"x"}',
            response_topic=self.topics.reply("bare"),
            correlation=b"bare",
        )
        deadline = began + 5.0
        while len(self.replies) == seen and time.perf_counter() < deadline:
            self.bus.loop_once(0.01)
        return time.perf_counter() - began

    def close(self) -> None:
        self.bus.stop()


def start_daemons(site: Path, broker: str, *commands: list[str]) -> list[subprocess.Popen[bytes]]:
    """Each command (["hall", "--state-dir", …]) as a quiet quhao process on this site."""
    return [
        quhao(*command, "--config", str(site), "--broker", broker, "--log-level", "WARNING")
        for command in commands
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")

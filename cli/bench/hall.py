"""`quhao bench hall`: durable ticket issue vs. a bare MQTT v5 echo, same broker, same run.

14 kiosk clients in separate processes each send sequential `issue` requests to a
real `quhao hall` (SQLite WAL, synchronous=FULL); the same 14 clients then send
the same number of requests to an echo responder. Rounds alternate so drift on
a shared machine hits both sides alike.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cli.bench.baseline import ECHO_SITE, Run, cpu_seconds, ratio, run_clients, start_echo
from quhao.broker import Mosquitto
from quhao.mqtt import Bus
from quhao.processes import quhao, stop

BENCH_SITE = "benchhall"


def bench_site_toml(kiosks: int) -> str:
    lines = [
        "[site]",
        f'id = "{BENCH_SITE}"',
        'name = "基准测试大厅"',
        'hours = ["00:00-24:00"]',
        'secret_file = "bench.secret"',
        "",
        "# Each simulated kiosk sends as fast as it can: far above a real device's rate.",
        "[limits]",
        "kiosk = { per_s = 100000, burst = 100000 }",
        "counter = { per_s = 100000, burst = 100000 }",
        "",
        "[[services]]",
        'id = "bench"',
        'name = "基准业务"',
        'prefix = "A"',
        "",
        "[[windows]]",
        "number = 1",
        'services = ["bench"]',
        "",
    ]
    for k in range(1, kiosks + 1):
        lines += ["[[kiosks]]", f'name = "kiosk-K{k}"', ""]
    lines += ["[[counters]]", 'name = "counter-W1"', "window = 1", ""]
    return "\n".join(lines)


def _merge(runs: list[Run]) -> Run:
    return Run(
        [lat for r in runs for lat in r.latencies],
        sum(r.wall_s for r in runs),
        sum(r.failures for r in runs),
    )


def run_hall_bench(
    clients: int = 14, requests: int = 300, rounds: int = 2, out: Path | None = None
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="quhao-bench-"))
    (work / "site.toml").write_text(bench_site_toml(clients))
    (work / "bench.secret").write_text("benchmark-secret-not-for-halls\n")
    devices = [f"kiosk-K{k}" for k in range(1, clients + 1)]
    with Mosquitto(workdir=work / "broker") as broker:
        echo_proc, echo_stop = start_echo(broker.url)
        echo_pid = echo_proc.pid
        assert echo_pid is not None  # start_echo returns it started
        hall = quhao(
            "hall",
            "--config",
            str(work / "site.toml"),
            "--broker",
            broker.url,
            "--state-dir",
            str(work / "hall"),
            "--log-level",
            "WARNING",
        )
        try:
            _wait_hall_online(broker.url)
            echo_runs, hall_runs = [], []
            echo_cpu = hall_cpu = 0.0
            for _ in range(rounds):
                before = cpu_seconds(echo_pid)
                echo_runs.append(run_clients(broker.url, ECHO_SITE, devices, requests, "echo"))
                echo_cpu += cpu_seconds(echo_pid) - before
                before = cpu_seconds(hall.pid)
                hall_runs.append(run_clients(broker.url, BENCH_SITE, devices, requests, "issue"))
                hall_cpu += cpu_seconds(hall.pid) - before
        finally:
            stop(hall, 15)
            echo_stop.set()
            echo_proc.join(10)
    tickets = _count_tickets(work / "hall" / "hall.sqlite")
    shutil.rmtree(work, ignore_errors=True)
    echo, issue = _merge(echo_runs), _merge(hall_runs)
    return report(clients, echo, issue, tickets, echo_cpu, hall_cpu)


def report(
    clients: int, echo: Run, issue: Run, tickets: int, echo_cpu: float, hall_cpu: float
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "hall.issue",
        "clients": clients,
        "echo": echo.summary(),
        "issue": issue.summary(),
        "tickets_in_db": tickets,
        "ratio_p50": ratio(issue.p50_ms, echo.p50_ms),
        "ratio_p99": ratio(issue.p99_ms, echo.p99_ms),
        "ratio_throughput": ratio(issue.throughput, echo.throughput),
        # includes requests made during warm-up, the same number on both sides
        "cpu_ms_per_request": {
            "echo_responder": round(echo_cpu * 1000 / echo.count, 3),
            "hall": round(hall_cpu * 1000 / issue.count, 3),
        },
    }
    print(
        f"\nhall issue vs bare MQTT v5 echo — {clients} concurrent kiosk processes, "
        f"{issue.count} requests each side"
    )
    print(f"{'':22}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for name, run in (("echo (baseline)", echo), ("issue (durable)", issue)):
        print(f"{name:22}{run.p50_ms:10.2f}{run.p99_ms:10.2f}{run.throughput:10.0f}")
    p50_ok = results["ratio_p50"] <= 1.5
    tput_ok = results["ratio_throughput"] >= 0.5
    print(
        f"{'ratio issue/echo':22}{results['ratio_p50']:10.2f}{results['ratio_p99']:10.2f}"
        f"{results['ratio_throughput']:10.2f}"
    )
    cpu = results["cpu_ms_per_request"]
    print(
        f"CPU per request: echo responder {cpu['echo_responder']:.3f} ms, "
        f"hall {cpu['hall']:.3f} ms (ratio {ratio(cpu['hall'], cpu['echo_responder'])})"
    )
    print(
        f"targets: p50 <= 1.5x echo: {'met' if p50_ok else 'MISSED'}; "
        f"throughput >= 50% of echo: {'met' if tput_ok else 'MISSED'}; "
        f"failed requests: {issue.failures}; tickets committed: {tickets}"
    )
    print(json.dumps(results, separators=(",", ":")))
    return results


def _wait_hall_online(broker: str, timeout: float = 20.0) -> None:
    import threading

    from quhao.topics import Topics

    online = threading.Event()
    bus = Bus(broker, "bench-wait")
    bus.subscribe(Topics(BENCH_SITE).hall_state, lambda m: online.set())
    bus.start()
    try:
        if not online.wait(timeout):
            raise RuntimeError("the hall did not come up")
    finally:
        bus.stop()
    time.sleep(0.2)


def _count_tickets(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0])

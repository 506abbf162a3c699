"""`quhao bench counter`: a key press on the caller keypad → the number on the LED.

Real chain: keypad FIFO → `quhao counter` → MQTT → `quhao hall` (SQLite commit)
→ retained window state → counter → serial frame on a pty → LED simulator.
Measured from writing the key record to the LED simulator reading the frame
that shows the new number. In the same run, on the same broker: a bare MQTT v5
echo round trip, one request at a time, as the baseline.

A pty has no baud rate: on a real 9600-baud display line a 30-byte frame adds
about 31 ms of wire time, the same with any software.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.bench.baseline import BareEcho, Run, ratio, start_daemons, start_echo
from quhao.broker import Mosquitto
from quhao.mqtt import Bus
from quhao.processes import stop
from quhao.rpc import HallClient
from quhao.topics import Topics
from simulators.keys import KeypadFeeder
from simulators.led import LedSimulator

SITE_ID = "benchcounter"


def _site(work: Path) -> Path:
    text = f"""
[site]
id = "{SITE_ID}"
name = "基准测试大厅"
hours = ["00:00-24:00"]

[limits]
kiosk = {{ per_s = 100000, burst = 100000 }}
counter = {{ per_s = 100000, burst = 100000 }}

[[services]]
id = "bench"
name = "基准业务"
prefix = "A"
quota = false
id_required = false

[[windows]]
number = 1
services = ["bench"]

[[kiosks]]
name = "kiosk-K1"

[[counters]]
name = "counter-W1"
window = 1
keypad = "events://{work}/keys.fifo"
display = "serial://{work}/led?addr=1"
"""
    path = work / "site.toml"
    path.write_text(text)
    return path


def _showing(number: str) -> Callable[[str], bool]:
    """An LED check bound to this number, not to the loop variable."""
    return lambda text: number in text


def run_counter_bench(presses: int = 200, out: Path | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="quhao-bench-counter-"))
    site = _site(work)
    led = LedSimulator(work / "led", 1).start()
    keys = KeypadFeeder(work / "keys.fifo")
    procs: list[subprocess.Popen[bytes]] = []
    with Mosquitto(workdir=work / "broker") as broker:
        echo_proc, echo_stop = start_echo(broker.url)
        try:
            procs = start_daemons(
                site,
                broker.url,
                ["hall", "--state-dir", str(work / "hall")],
                ["counter", "--device", "counter-W1"],
            )
            led.wait_for(lambda t: t == "1号窗口", timeout=20)
            bus = Bus(broker.url, "bench-kiosk")
            kiosk = HallClient(bus, Topics(SITE_ID), "kiosk-K1")
            bus.start()
            for _ in range(presses + 10):
                kiosk.request("issue", {"service": "bench", "person": None})
            bus.stop()
            latencies, echoes = [], []
            bare = BareEcho(broker.url)
            for i in range(presses + 10):
                number = f"A{i + 1:03d}"
                began = time.perf_counter()
                keys.tap("KEY_KPENTER")
                led.wait_for(_showing(number), timeout=10)
                if i >= 10:  # warm-up
                    latencies.append(led.history[-1].at - began)
                keys.tap("KEY_KPDOT")  # finish: the next call is a new key, no lockout
                led.wait_for(lambda t: t == "1号窗口", timeout=10)
                echoes.append(bare.round_trip())  # side by side, sample by sample
            bare.close()
            press_run = Run(latencies, sum(latencies))
            echo = Run(echoes[10:], sum(echoes[10:]))
        finally:
            for proc in procs:
                stop(proc, 15)
            echo_stop.set()
            echo_proc.join(10)
            led.close()
            keys.close()
    shutil.rmtree(work, ignore_errors=True)
    results = {
        "benchmark": "counter.key_to_led",
        "key_to_led": press_run.summary(),
        "echo": echo.summary(),
        "ratio_p50": ratio(press_run.p50_ms, echo.p50_ms),
        "ratio_p99": ratio(press_run.p99_ms, echo.p99_ms),
    }
    print(f"\ncaller key → LED frame vs bare MQTT v5 echo round trip ({presses} presses)")
    print(f"{'':26}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'echo round trip':26}{echo.p50_ms:10.2f}{echo.p99_ms:10.2f}")
    print(f"{'key → LED (real chain)':26}{press_run.p50_ms:10.2f}{press_run.p99_ms:10.2f}")
    print(f"{'ratio':26}{results['ratio_p50']:10.2f}{results['ratio_p99']:10.2f}")
    print(json.dumps(results, separators=(",", ":")))
    if out:
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results

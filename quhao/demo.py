"""`quhao demo`: a private broker, the real hall, and devices exercising it.

Until the crowd simulator lands this drives the hall through the wire contract
directly: kiosks issue tickets, counters call, finish and rate them, and the
live queue is printed at the end.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from hall.ctl import HallView
from quhao.broker import Mosquitto
from quhao.clock import Clock
from quhao.config import load
from quhao.mqtt import Bus
from quhao.rpc import HallClient
from quhao.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "site.toml"


def run_demo(config_path: Path = EXAMPLE, out: Path | None = None, seed: int = 7) -> int:
    from rich.console import Console

    console = Console()
    config = load(config_path)
    rng = random.Random(seed)
    out = out or Path(tempfile.mkdtemp(prefix="quhao-demo-"))
    # A weekday morning in the hall's time zone, so the hall is open.
    start = datetime(2026, 11, 23, 9, 0, tzinfo=config.site.timezone).timestamp()
    clock = Clock(origin_hall=start, speed=60)
    topics = Topics(config.site.id)
    with Mosquitto(workdir=out / "broker") as broker:
        hall = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quhao.cli",
                "hall",
                "--config",
                str(config_path),
                "--broker",
                broker.url,
                "--state-dir",
                str(out / "hall"),
                "--clock",
                clock.spec(),
                "--log-level",
                "WARNING",
            ]
        )
        buses: list[Bus] = []
        try:

            def device(name: str) -> HallClient:
                bus = Bus(broker.url, name)
                client = HallClient(bus, topics, name)
                bus.start()
                buses.append(bus)
                return client

            view = HallView(config)
            watcher = Bus(broker.url, "demo-view")
            watcher.subscribe(topics.hall_state, view.on_message)
            watcher.subscribe(topics.window_state("+"), view.on_message)
            watcher.start()
            buses.append(watcher)
            kiosks = [device(name) for name in list(config.kiosks)[:4]]
            counters = {name: device(name) for name in list(config.counters)[:8]}
            time.sleep(1.0)
            issued = 0
            for i in range(60):
                kiosk = kiosks[i % len(kiosks)]
                service = rng.choice(list(config.services))
                key = f"{rng.getrandbits(128):032x}"
                response = kiosk.request(
                    "issue",
                    {"service": service, "person": {"key": key, "age": rng.randint(18, 85)}},
                )
                issued += bool(response.get("ok"))
            console.print(f"issued {issued} tickets from {len(kiosks)} kiosks")
            for round_ in range(3):
                for counter in counters.values():
                    called = counter.request("call")
                    ticket = called.get("ticket")
                    if ticket and round_ < 2:
                        counter.request("finish")
                        counter.request(
                            "rate", {"ticket": ticket["id"], "level": rng.choice([5, 5, 4, 3])}
                        )
            time.sleep(1.0)
            console.print(view.render())
            console.print(f"hall database: {out / 'hall' / 'hall.sqlite'}")
        finally:
            for bus in buses:
                bus.stop()
            hall.terminate()
            hall.wait(15)
    if out.name.startswith("quhao-demo-"):
        shutil.rmtree(out / "broker", ignore_errors=True)
    return 0

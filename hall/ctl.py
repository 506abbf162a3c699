"""`quhao ctl`: the live queue and windows in a terminal, from the retained MQTT state."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from quhao.brokergen import CTL_USER
from quhao.config import SiteConfig
from quhao.mqtt import Bus, Message, credentials
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object


class HallView:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.hall: dict[str, Any] | None = None
        self.windows: dict[int, dict[str, Any]] = {}
        self.changed = threading.Event()

    def on_message(self, message: Message) -> None:
        try:
            payload = decode_object(message.payload)
        except BadPayload:
            return
        if message.topic.endswith("/hall/state"):
            self.hall = payload
        elif isinstance(payload.get("window"), int):
            self.windows[payload["window"]] = payload
        self.changed.set()

    def complete(self) -> bool:
        return self.hall is not None and len(self.windows) >= len(self.config.windows)

    def render(self) -> Group:
        tz = self.config.site.timezone
        services = Table(title=f"{self.config.site.name} — queue", expand=False)
        for column in ("service", "prefix", "waiting", "est. wait", "issued today"):
            services.add_column(column, justify="right" if column != "service" else "left")
        for s in (self.hall or {}).get("services", []):
            services.add_row(
                s["name"],
                s["prefix"],
                str(s["waiting"]),
                f"{s['estimated_wait_s'] // 60} min",
                str(s["issued"]),
            )
        windows = Table(title="windows")
        for column in ("window", "status", "ticket", "service", "staff", "since"):
            windows.add_column(column)
        for number in sorted(self.windows):
            w = self.windows[number]
            since = (
                datetime.fromtimestamp(w["since"], tz).strftime("%H:%M:%S")
                if w.get("since")
                else ""
            )
            windows.add_row(
                str(number),
                w["status"],
                w.get("ticket") or "",
                w.get("service_name") or "",
                w.get("staff_name") or w.get("staff") or "",
                since,
            )
        return Group(services, windows)


def run_ctl(
    config: SiteConfig,
    broker: str,
    *,
    once: bool,
    timeout: float,
    credentials_dir: Path | None = None,
) -> int:
    topics = Topics(config.site.id)
    view = HallView(config)
    # Logged in as the read-only user `ctl`, the broker makes the client id `ctl`
    # (one session per user): it does not disturb a display or the demo's view.
    # Without credentials (a development broker) any distinct client id will do.
    password, tls = credentials(credentials_dir, CTL_USER)
    bus = Bus(
        broker,
        CTL_USER if password or tls else f"ctl-{int(time.time() * 1000) % 100000}",
        username=CTL_USER if password or tls else None,
        password=password,
        tls=tls,
    )
    bus.subscribe(topics.hall_state, view.on_message)
    bus.subscribe(topics.window_state("+"), view.on_message)
    bus.start()
    console = Console()
    try:
        if once:
            deadline = time.monotonic() + timeout
            while not view.complete() and time.monotonic() < deadline:
                view.changed.wait(0.1)
                view.changed.clear()
            if view.hall is None:
                console.print("no hall/state on the broker: is the hall running?")
                return 1
            console.print(view.render())
            return 0
        with Live(view.render(), console=console, refresh_per_second=4) as live:
            while True:
                if view.changed.wait(0.5):
                    view.changed.clear()
                    live.update(view.render())
    except KeyboardInterrupt:
        return 0
    finally:
        bus.stop()

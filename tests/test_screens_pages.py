"""A called ticket's phone page goes out as soon as the call is known, whatever the
daemon is doing with the other pages of its queue.

The daemon updates the pages of a queue that moved `later_s` after the move, together;
a page that a message names (the ticket called) must not wait for that. The screens
daemon runs in this process (its asyncio loop in a thread) with `later_s` at a minute,
so a called page held back with the moved queue would arrive a minute late, while the
real hall and broker drive it; the page's stream is read as a phone would.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quhao import ticketpage
from quhao.broker import Mosquitto, free_port, wait_for_port
from quhao.config import load
from screens.daemon import ScreensDaemon
from tests.helpers import ROOT, Daemon, Device, hall_daemon, wait_until

SITE = ROOT / "tests" / "sites" / "screens.toml"
SITE_ID = "screenhall"
SECRET = (ROOT / "tests" / "sites" / "test.secret").read_bytes().strip()
HELD_S = 60.0  # the moved queue's pages wait this long …
PROMPT_S = 10.0  # … and a called page must come within this (under any load)


@dataclass
class Running:
    broker: Mosquitto
    hall: Daemon
    daemon: ScreensDaemon
    port: int


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    broker = Mosquitto(workdir=tmp_path / "broker")
    hall = hall_daemon(broker.url, tmp_path / "hall", config=SITE).launch()
    port = free_port()
    daemon = ScreensDaemon(load(SITE), broker.url, port=port)
    daemon.later_s = HELD_S
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        await daemon.start()
        await stop.wait()
        await daemon.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        hall.wait_ready()
        wait_for_port(port, timeout=10)
        wait_until(lambda: daemon.view.online and daemon.view.hall is not None, 10, "screens live")
        yield Running(broker, hall, daemon, port)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
        hall.stop()
        broker.close()


class PageStream:
    """A ticket page's event stream, read as a phone's browser would."""

    def __init__(self, port: int, ticket_id: str) -> None:
        path = ticketpage.path(ticketpage.page_key(SECRET), SITE_ID, ticket_id)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROMPT_S)
        self.conn.request("GET", "/events" + path)
        self.response = self.conn.getresponse()
        assert self.response.status == 200

    def next_view(self) -> dict[str, Any]:
        while True:
            line = self.response.readline()
            assert line, "the stream ended"
            if line.startswith(b"data: "):
                return dict(json.loads(line[6:]))

    def close(self) -> None:
        self.conn.close()


def test_a_called_page_does_not_wait_for_its_moved_queue(running: Running) -> None:
    kiosk = Device(running.broker.url, "kiosk-K1", site=SITE_ID)
    counter = Device(running.broker.url, "counter-W3", site=SITE_ID)
    stream = None
    try:
        mine = kiosk.request("issue", service="enquiry", person=None)["ticket"]
        stream = PageStream(running.port, mine["id"])
        assert stream.next_view()["status"] == "waiting"
        # Another ticket moves the queue: its pages (mine) are now held for later_s …
        other = kiosk.request("issue", service="enquiry", person=None)["ticket"]
        wait_until(lambda: other["id"] in running.daemon.view.tickets, 10, "the issue folded")
        # … and while they are, mine is called.
        began = time.monotonic()
        assert counter.request("call")["ticket"]["id"] == mine["id"]
        try:
            view = stream.next_view()
        except TimeoutError:
            pytest.fail(f"no update of the called page {PROMPT_S:g} s after the call")
        took = time.monotonic() - began
        assert (view["status"], view["window"]) == ("called", 3)
        assert took < PROMPT_S
    finally:
        if stream is not None:
            stream.close()
        kiosk.close()
        counter.close()

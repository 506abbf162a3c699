"""The screens daemon in a real headless Chromium, against a real broker and hall.

One broker, hall, screens daemon and browser for the module (tests/conftest.py keeps the
module on one worker); each test uses its own windows and services so they do not see
each other's tickets. The broker restart is the last test.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from quhao import ticketpage
from quhao.broker import Mosquitto, free_port
from quhao.mqtt import Bus
from screens.shots import PHONE_SIZE, chromium, fit_viewport, take
from tests.helpers import ROOT, Daemon, Device, Recorder, hall_daemon, wait_until

SITE = ROOT / "tests" / "sites" / "screens.toml"
SITE_ID = "screenhall"
SECRET = (ROOT / "tests" / "sites" / "test.secret").read_bytes().strip()


@dataclass
class Hall:
    broker: Mosquitto
    hall: Daemon
    screens: Daemon
    base: str
    driver: Any
    work: Path

    def device(self, name: str) -> Device:
        return Device(self.broker.url, name, site=SITE_ID)

    def ticket_path(self, ticket_id: str) -> str:
        return ticketpage.path(ticketpage.page_key(SECRET), SITE_ID, ticket_id)


def screens_daemon(broker_url: str, work: Path, port: int) -> Daemon:
    return Daemon(
        [
            "screens",
            "--config",
            str(SITE),
            "--broker",
            broker_url,
            "--port",
            str(port),
            "--log-level",
            "DEBUG",
        ],
        work / "screens.log",
        "screens serving",
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hall]:
    work = tmp_path_factory.mktemp("screens")
    broker = Mosquitto(workdir=work / "broker")
    hall = hall_daemon(broker.url, work / "hall", config=SITE).launch()
    port = free_port()
    screens = screens_daemon(broker.url, work, port).launch()
    driver = None
    try:
        hall.wait_ready()
        screens.wait_ready()
        driver = chromium()
        yield Hall(broker, hall, screens, f"http://127.0.0.1:{port}", driver, work)
    finally:
        if driver is not None:
            driver.quit()
        screens.stop()
        hall.stop()
        broker.close()


def text_of(driver: Any, selector: str) -> str:
    found = driver.execute_script(
        "var n = document.querySelector(arguments[0]); return n ? n.textContent : null", selector
    )
    return str(found or "")


def wait_text(driver: Any, selector: str, wanted: str, timeout: float = 5.0) -> float:
    """Until the element's text contains `wanted`; returns when (perf_counter)."""
    wait_until(lambda: wanted in text_of(driver, selector), timeout, f"{wanted!r} in {selector}")
    return time.perf_counter()


def live(driver: Any, base: str, path: str) -> None:
    """Open a page and wait for its first snapshot."""
    driver.get(base + path)
    wait_until(
        lambda: driver.execute_script(
            "return !document.body.classList.contains('is-offline') && "
            "!!document.querySelector('.cell, .clerk, .clerk-none, .phone-service:not(:empty)')"
        ),
        10,
        f"{path} live",
    )


def get(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post(
    base: str, path: str, body: bytes, origin: str | None = "same", ctype: str = "application/json"
) -> tuple[int, str]:
    headers = {"Content-Type": ctype}
    if origin is not None:
        headers["Origin"] = base if origin == "same" else origin
    request = urllib.request.Request(base + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def status(base: str) -> dict[str, Any]:
    return dict(json.loads(get(base + "/status")[1]))


# ---- the board ------------------------------------------------------------------


def test_call_shows_on_the_board_within_a_second_without_reload(site: Hall) -> None:
    driver = site.driver
    live(driver, site.base, "/board")
    driver.execute_script("window.notReloaded = true")
    kiosk, counter = site.device("kiosk-K1"), site.device("counter-W3")
    try:
        number = kiosk.request("issue", service="enquiry", person=None)["ticket"]["number"]
        began = time.perf_counter()
        assert counter.request("call")["ticket"]["number"] == number
        shown = wait_text(driver, '.cell[data-window="3"] .ticket', number, timeout=1.0)
        assert shown - began < 1.0
        wait_text(driver, "#recent li", number, timeout=1.0)
        assert "3 号窗口" in text_of(driver, "#recent li")  # the recent call says its window
        wait_text(driver, "#now-number", number)
        assert driver.execute_script("return window.notReloaded") is True
    finally:
        kiosk.close()
        counter.close()


def test_calls_in_a_burst_each_stay_highlighted(site: Hall) -> None:
    driver = site.driver
    live(driver, site.base, "/board")
    kiosk = site.device("kiosk-K1")
    counters = [site.device("counter-W2"), site.device("counter-W4")]
    try:
        kiosk.request("issue", service="tax", person=None)
        kiosk.request("issue", service="medical", person=None)
        driver.execute_script(
            "window.seenNow = []; new MutationObserver(function () {"
            " seenNow.push(document.getElementById('now-number').textContent); })"
            ".observe(document.getElementById('now-number'), {childList: true});"
        )
        numbers = [c.request("call")["ticket"]["number"] for c in counters]
        wait_until(
            lambda: set(numbers) <= set(driver.execute_script("return window.seenNow")),
            12,
            "both calls highlighted in turn",
        )
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#recent li')].map(l => l.dataset.number)"
        )
        assert set(numbers) <= set(rows[:2])
    finally:
        kiosk.close()
        for counter in counters:
            counter.close()


def test_41_windows_fit_a_1920x1080_screen(site: Hall) -> None:
    driver = site.driver
    live(driver, site.base, "/board")
    geometry = driver.execute_script(
        "var d = document.documentElement; return {w: innerWidth, h: innerHeight,"
        " sw: d.scrollWidth, sh: d.scrollHeight, cells: [...document.querySelectorAll('.cell')]"
        ".map(c => { var r = c.getBoundingClientRect(), t = c.querySelector('.ticket');"
        " return [r.left, r.top, r.right, r.bottom, parseFloat(getComputedStyle(t).fontSize),"
        " t.scrollWidth <= c.clientWidth]; })}"
    )
    assert (geometry["w"], geometry["h"]) == (1920, 1080)
    assert geometry["sw"] <= 1920 and geometry["sh"] <= 1080, "scrollbars"
    assert len(geometry["cells"]) == 41
    for left, top, right, bottom, font, fits in geometry["cells"]:
        assert left >= 0 and top >= 0 and right <= 1920 and bottom <= 1080
        assert font >= 24 and fits  # a number readable across a hall, inside its cell


def test_a_board_per_floor_shows_its_windows_only(site: Hall) -> None:
    live(site.driver, site.base, "/board/tax")
    shown = site.driver.execute_script(
        "return [...document.querySelectorAll('.cell')].map(c => +c.dataset.window)"
    )
    assert 2 in shown and 3 not in shown and len(shown) < 41
    assert "税务" in text_of(site.driver, "#board-title")


def test_unknown_window_or_board_is_a_clear_404_page(site: Hall) -> None:
    for path in ("/window/99", "/window/abc", "/board/nope", "/events/window/99", "/nothing"):
        code, body = get(site.base + path)
        assert code == 404 and "页面不存在" in body, path


# ---- the window screen ----------------------------------------------------------


def test_window_screen_shows_the_clerk_and_takes_a_touch_rating(site: Hall) -> None:
    driver = site.driver
    kiosk, counter = site.device("kiosk-K1"), site.device("counter-W1")
    rated = Recorder(site.broker.url, f"quhao/{SITE_ID}/event/#", client_id="test-rated")
    try:
        assert counter.request("login", staff="S001")["ok"] is False  # bare id: forbidden
        live(driver, site.base, "/window/1")
        # S001 has no PIN in this site: a card proof is the way in; the hall checks it
        from quhao.staffauth import card_proof

        counter.request("login", card=card_proof(SECRET, "04A10001"))
        wait_text(driver, ".clerk-name", "李敏")
        page = text_of(driver, ".clerk")
        assert "共产党员岗" in page and "020-8888 1001" in page and "S001" in page
        assert "热情服务" in page
        assert driver.execute_script("return document.querySelector('img.photo').naturalWidth")
        for level, reason in ((5, ""), (2, "等候时间长")):
            key = f"{level:02d}".ljust(32, "a")
            kiosk.request("issue", service="social", person={"key": key, "age": 40})
            number = counter.request("call")["ticket"]["number"]
            wait_text(driver, "#serving", number)
            counter.request("finish")
            wait_until(lambda: driver.find_element("id", "rating").is_displayed(), 5, "prompt")
            wait_text(driver, "#rating-ticket", number)
            driver.find_element("css selector", f'.level[data-level="{level}"]').click()
            if reason:
                wait_until(lambda: driver.find_element("id", "reasons").is_displayed(), 5, "why")
                driver.find_element("css selector", f'.reason[data-reason="{reason}"]').click()
            wait_until(lambda: driver.find_element("id", "thanks").is_displayed(), 5, "thanks")
            event = rated.wait_for(
                f"quhao/{SITE_ID}/event/ticket.rated", lambda e, n=number: e["number"] == n
            )
            assert (event["level"], event["reason"], event["window"]) == (level, reason, 1)
        assert "rated 2 by touch" in site.screens.log()
    finally:
        counter.request("logout")
        rated.close()
        kiosk.close()
        counter.close()


def test_pause_shows_on_the_window_screen_and_the_board(site: Hall) -> None:
    driver = site.driver
    counter = site.device("counter-W4")
    try:
        counter.request("finish")  # pause waits for the ticket served to be done
        assert counter.request("pause")["ok"]
        live(driver, site.base, "/window/4")
        wait_text(driver, "#serving", "暂停服务")
        live(driver, site.base, "/board")
        wait_text(driver, '.cell[data-window="4"] .ticket', "暂停服务")
    finally:
        counter.request("resume")
        counter.close()


# ---- the phone page -------------------------------------------------------------


def test_ticket_page_follows_the_queue_and_says_where_to_go(site: Hall) -> None:
    driver = site.driver
    kiosk, counter = site.device("kiosk-K1"), site.device("counter-W3")
    try:
        while counter.request("call")["ticket"] is not None:  # the enquiry queue empty
            pass
        first = kiosk.request("issue", service="enquiry", person=None)["ticket"]
        mine = kiosk.request("issue", service="enquiry", person=None)["ticket"]
        fit_viewport(driver, PHONE_SIZE)
        live(driver, site.base, site.ticket_path(mine["id"]))
        assert text_of(driver, "#number") == mine["number"]
        assert "综合咨询" in text_of(driver, "#service")
        wait_text(driver, "#status", "前面还有 1 人")
        assert counter.request("call")["ticket"]["id"] == first["id"]
        wait_text(driver, "#status", "前面还有 0 人")
        began = time.perf_counter()
        counter.request("call")
        assert wait_text(driver, "#status", "请到 3 号窗口", timeout=1.0) - began < 1.0
        counter.request("recall")
        wait_text(driver, "#detail", "再次呼叫")
        counter.request("skip")
        wait_text(driver, "#status", "已过号")
    finally:
        fit_viewport(driver, (1920, 1080))
        kiosk.close()
        counter.close()


def test_a_wrong_token_gets_the_same_404_as_an_unknown_ticket(site: Hall) -> None:
    kiosk = site.device("kiosk-K1")
    try:
        ticket = kiosk.request("issue", service="medical", person=None)["ticket"]["id"]
    finally:
        kiosk.close()
    right = site.ticket_path(ticket)
    assert get(site.base + right)[0] == 200
    wrong = right[:-4] + ("AAAA" if not right.endswith("AAAA") else "BBBB")
    unknown = site.ticket_path("2026-01-01/Z999")[:-1] + "x"
    codes = [get(site.base + p) for p in (wrong, unknown, "/t/" + ticket + "/short")]
    assert {c for c, _ in codes} == {404}
    assert codes[0][1] == codes[1][1] == codes[2][1]  # nothing tells them apart
    assert get(site.base + "/events" + wrong)[0] == 404


def test_screenshots_show_rendered_chinese(site: Hall) -> None:
    kiosk = site.device("kiosk-K1")
    try:
        ticket = kiosk.request("issue", service="medical", person=None)["ticket"]["id"]
    finally:
        kiosk.close()
    out = site.work / "shots"
    shots = take(
        site.base, ["/board", "/window/1", site.ticket_path(ticket)], out, driver=site.driver
    )
    fit_viewport(site.driver, (1920, 1080))
    assert site.driver.execute_script("return document.fonts.check('40px \"WenQuanYi Micro Hei\"')")
    for shot in shots:
        with Image.open(shot) as image:
            band = image.convert("L").crop((0, 0, image.width, 90 if image.width > 500 else 48))
            background = max(band.getcolors(1 << 16) or [(0, 0)])[1]
            ink = sum(n for n, v in band.getcolors(1 << 16) or [] if abs(v - background) > 60)
            # the title's Chinese characters: far more than a blank band (0)
            assert ink > 0.02 * band.width * band.height, (shot.name, ink)


# ---- bad input and abuse ----------------------------------------------------------


def test_an_unreadable_state_message_is_logged_and_skipped(site: Hall) -> None:
    bus = Bus(site.broker.url, "test-garbage")
    bus.start()
    try:
        for payload in (b"\xff\xfe", b"[]", b'{"window": "x"}', b"{" * 5000):
            bus.publish(f"quhao/{SITE_ID}/window/5/state", payload).wait_for_publish(5)
        bus.publish(f"quhao/{SITE_ID}/window/999999999/state", b"{}").wait_for_publish(5)
        bus.publish(f"quhao/{SITE_ID}/hall/state", b'{"day": 1}').wait_for_publish(5)
        wait_until(
            lambda: site.screens.log().count("skipped a message the screens cannot read") >= 6,
            5,
            "the garbage logged",
        )
    finally:
        bus.stop()
    assert site.screens.alive and get(site.base + "/board")[0] == 200
    test_call_shows_on_the_board_within_a_second_without_reload(site)  # still live


def open_stream(base: str, path: str) -> http.client.HTTPResponse:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", path)
    return conn.getresponse()


def test_a_browser_that_goes_costs_nothing(site: Hall) -> None:
    site.driver.get("about:blank")
    wait_until(lambda: status(site.base)["clients"] == 0, 5, "no streams")
    streams = [open_stream(site.base, "/events/window/2") for _ in range(5)]
    assert all(s.status == 200 for s in streams)
    assert status(site.base)["clients"] == 5
    for stream in streams:
        stream.close()
    wait_until(lambda: status(site.base)["clients"] == 0, 5, "the streams removed")


def test_a_flood_of_streams_is_capped_and_others_keep_working(site: Hall) -> None:
    site.driver.get("about:blank")
    wait_until(lambda: status(site.base)["clients"] == 0, 5, "no streams")
    flood = [open_stream(site.base, "/events/board") for _ in range(60)]  # cap: 40
    try:
        codes = [s.status for s in flood]
        assert codes.count(200) == 40 and codes.count(503) == 20
        assert get(site.base + "/board")[0] == 200  # pages are still served
    finally:
        for stream in flood:
            stream.close()
    wait_until(lambda: status(site.base)["clients"] == 0, 5, "the flood gone")
    assert open_stream(site.base, "/events/board").status == 200


def test_the_rating_post_refuses_cross_origin_other_types_and_huge_bodies(site: Hall) -> None:
    body = json.dumps({"ticket": "x", "level": 5}).encode()
    assert post(site.base, "/window/1/rate", body, origin=None)[0] == 403
    assert post(site.base, "/window/1/rate", body, origin="http://evil.example")[0] == 403
    assert post(site.base, "/window/1/rate", b"level=5", ctype="text/plain")[0] == 415
    assert post(site.base, "/window/1/rate", b"{" + b" " * 1_000_000 + b"}")[0] == 413
    assert post(site.base, "/window/1/rate", b"not json")[0] == 400
    assert post(site.base, "/window/1/rate", json.dumps({"level": 5}).encode())[0] == 400
    rating = json.dumps({"ticket": "2026-01-01/A001", "level": 5}).encode()
    assert post(site.base, "/window/1/rate", rating)[0] == 409  # no rating open for it
    assert post(site.base, "/window/99/rate", rating)[0] == 404
    with socket.create_connection(("127.0.0.1", int(site.base.rsplit(":", 1)[1]))) as sock:
        sock.sendall(  # a body far beyond the limit announced: refused before it is read
            b"POST /window/1/rate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Origin: http://x\r\nContent-Length: 100000000\r\n\r\n"
        )
        assert b" 413 " in sock.recv(200)
    assert site.screens.alive


# ---- last: the broker goes away and comes back --------------------------------------


def test_the_board_shows_offline_and_recovers_after_the_broker_restarts(site: Hall) -> None:
    driver = site.driver
    live(driver, site.base, "/board")
    port = site.broker.port
    site.broker.close()
    wait_until(lambda: driver.find_element("id", "offline").is_displayed(), 10, "offline banner")
    site.broker = Mosquitto(workdir=site.work / "broker", port=port)
    wait_until(lambda: not driver.find_element("id", "offline").is_displayed(), 15, "live again")
    assert "lost the broker" in site.screens.log()
    wait_until(lambda: "connected to" in site.hall.log().rsplit("disconnected", 1)[-1], 15, "hall")
    test_call_shows_on_the_board_within_a_second_without_reload(site)

"""Screenshots of the screens' pages in the real headless Chromium (Debian's `chromium`
and `chromedriver`, driven by selenium; nothing is downloaded).

    from screens.shots import take
    take("http://127.0.0.1:8080", ["/board", "/window/5", "/t/2026-11-23/A001/…"], out)

The tests, the benchmark and the demo open their browser with `chromium()`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # selenium is a test and demo dependency, imported when used
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BOARD_SIZE = (1920, 1080)
PHONE_SIZE = (412, 915)
# Quiet, offline, reproducible: no update checks, sync, metrics or other calls home.
FLAGS = (
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-extensions",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--force-device-scale-factor=1",
    "--lang=zh-CN",
)


def chromium(size: tuple[int, int] = BOARD_SIZE) -> WebDriver:
    """A headless Chromium whose viewport is `size` (CSS pixels)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root otherwise
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    fit_viewport(driver, size)
    return driver


def fit_viewport(driver: WebDriver, size: tuple[int, int]) -> None:
    """Make the page's viewport exactly `size` (a window's frame takes some of it)."""
    driver.set_window_size(*size)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if list(inner) != list(size):
        driver.set_window_size(size[0] * 2 - inner[0], size[1] * 2 - inner[1])


def take(
    base_url: str,
    paths: list[str],
    out_dir: Path,
    *,
    settle_s: float = 1.5,
    driver: WebDriver | None = None,
) -> list[Path]:
    """A PNG of each page (`/t/…` pages at a phone's size, the others at 1920×1080),
    once its live stream has delivered the first snapshot (or after `settle_s`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    own = driver is None
    browser = driver or chromium()
    shots = []
    try:
        for path in paths:
            size = PHONE_SIZE if path.startswith("/t/") else BOARD_SIZE
            fit_viewport(browser, size)
            browser.get(base_url.rstrip("/") + path)
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline and not browser.execute_script(
                "return document.fonts.status === 'loaded' && document.readyState === 'complete'"
                " && !document.body.classList.contains('is-offline')"
                " && !!document.querySelector("
                "'.cell, .clerk, .clerk-none, .phone-service:not(:empty)')"
            ):
                time.sleep(0.05)
            time.sleep(0.3)  # the last paint
            name = re.sub(r"[^A-Za-z0-9]+", "-", path.split("/t/")[0] or "ticket").strip("-")
            if path.startswith("/t/"):
                name = "ticket-" + path.split("/")[3]
            target = out_dir / f"{name or 'page'}.png"
            browser.save_screenshot(str(target))
            shots.append(target)
    finally:
        if own:
            browser.quit()
    return shots

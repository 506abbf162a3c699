"""The demo's screens: `[screens]` and `[voice]` of the day's site, and screenshots of
the board, a window screen and a ticket page in the real headless Chromium mid-surge."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from pathlib import Path

from quhao import ticketpage
from screens.shots import CHROMEDRIVER, CHROMIUM

log = logging.getLogger("cli.demo")

# The one service whose calls are spoken (a small one: ~25 calls a day). At ×300 the
# hall calls a citizen every few real tenths of a second; rendering speech for every
# call would cost a core, and the announcer would lag far behind anyway. The other
# services are silent (logged, no WAV).
VOICE_SERVICE = "civil"


def screens_site(port: int, silent: list[str]) -> list[str]:
    """The site file's `[screens]` (QR codes carry the page URL) and `[voice]` lines."""
    quiet = ", ".join(f'{service} = "silent"' for service in silent)
    return [
        "[screens]",
        'listen = "127.0.0.1"',
        f"port = {port}",
        f'public_url = "http://127.0.0.1:{port}"',
        "",
        "[voice]",
        "enabled = true",
        'output = "wav"',
        'wav_dir = "voice"',
        "repeats = 1",
        f"services = {{ {quiet} }}",
        "",
    ]


def chromium_missing() -> str | None:
    """Why no screenshots can be taken, or None."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(tool):
            return f"{tool} is not installed (tools/bootstrap installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make deps)"
    return None


def waiting_ticket(db: Path) -> str | None:
    """A ticket waiting in the hall now (read-only; the hall keeps writing)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute(
                "SELECT id FROM tickets WHERE status = 'waiting' ORDER BY issued_at DESC LIMIT 1"
            ).fetchone()
    except sqlite3.Error as exc:
        log.warning("no ticket for the ticket page's screenshot: %s", exc)
        return None
    return str(row[0]) if row else None


class Screenshots:
    """Takes the day's screenshots once, in a thread of its own (Chromium takes seconds)."""

    def __init__(self, base_url: str, site: str, secret: bytes, db: Path, out: Path) -> None:
        self.base_url, self.site, self.key = base_url, site, ticketpage.page_key(secret)
        self.db, self.out = db, out
        self.thread: threading.Thread | None = None
        self.taken: list[Path] = []
        self.problem: str | None = None

    def start(self, window: int) -> None:
        if self.thread:
            return
        self.thread = threading.Thread(target=self._take, args=(window,), name="screenshots")
        self.thread.start()

    def _take(self, window: int) -> None:
        from screens.shots import take

        self.problem = chromium_missing()
        if self.problem:
            log.warning("no screenshots: %s", self.problem)
            return
        paths = ["/board", f"/window/{window}"]
        ticket = waiting_ticket(self.db)
        if ticket:
            paths.append(ticketpage.path(self.key, self.site, ticket))
        try:
            self.taken = take(self.base_url, paths, self.out, settle_s=5.0)
            log.info("screenshots: %s", ", ".join(p.name for p in self.taken))
        except Exception as exc:  # a browser that fails must not stop the day
            self.problem = f"Chromium failed: {exc}"
            log.warning("no screenshots: %s", self.problem)

    def join(self) -> None:
        if self.thread:
            self.thread.join(60)

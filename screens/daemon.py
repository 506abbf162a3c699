"""`quhao screens`: the hall's public state, served to screens and phones.

One asyncio event loop owns everything: the MQTT connection as the read-only `display`
user (driven by the loop itself, `screens.mqttio`), the state (`screens.state`,
pure), the browsers' streams (`screens.web.Hub`) and the raters' connections. A message
from the broker is folded into the state and fanned out to the streams that show what
changed, in the same callback; nothing crosses a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from quhao import ticketpage
from quhao.clock import Clock
from quhao.config import SiteConfig
from quhao.messages import MAX_REASON
from quhao.mqtt import Bus, Message, credentials
from quhao.topics import Topics
from screens.mqttio import AsyncBus
from screens.rating import Raters, RaterUnavailable
from screens.state import Changes, HallView, call_view
from screens.web import Hub, build_app, sse

if TYPE_CHECKING:
    from screens.voice.announcer import Announcer

log = logging.getLogger("quhao.screens")

DISPLAY_USER = "display"
PAGE_SLICE = 100
LATER_S = 0.3  # a moved queue's pages are updated this long after, together
VOICE_TOPICS = ("event/ticket.called", "event/ticket.recalled")
# What the screens read (the display user's ACL allows these and no more).
SUBSCRIPTIONS = (
    "hall/state",
    "window/+/state",
    "window/+/profile",
    "event/#",
    "device/hall/availability",
)


class ScreensDaemon:
    def __init__(
        self,
        config: SiteConfig,
        broker: str,
        clock: Clock | None = None,
        credentials_dir: Path | None = None,
        *,
        listen: str | None = None,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.topics = Topics(config.site.id)
        self.view = HallView(config)
        self.hub = Hub(config.screens.max_clients)
        self.title = config.site.name
        self.listen = listen or config.screens.listen
        self.port = config.screens.port if port is None else port
        # The ticket page token is keyed by the site secret; without one there are no
        # ticket pages (every /t/ address is the 404 page).
        self.page_key = (
            ticketpage.page_key(config.read_secret()) if config.site.secret_file else None
        )
        password, tls = credentials(credentials_dir, DISPLAY_USER)
        bus = Bus(broker, DISPLAY_USER, username=DISPLAY_USER, password=password, tls=tls)
        for suffix in SUBSCRIPTIONS:
            bus.subscribe(f"{self.topics.root}/{suffix}", self._on_message)
        self.bus = AsyncBus(bus, self._on_link)
        self.raters = Raters(config, broker, credentials_dir)
        self.heartbeat = time.monotonic()
        self.garbage = 0  # messages skipped as unreadable
        self._runner: web.AppRunner | None = None
        self._beat: asyncio.Task[None] | None = None
        self.announcer: Announcer | None = None
        # Ticket pages: the ones a message names go out at once (`_send_urgent`, as soon
        # as what was read with that message is folded); the other pages of a queue that
        # moved wait `later_s` (`_flush_later`), so a call moves each of them once.
        self._urgent: set[str] = set()
        self._urgent_scheduled = False
        self._later: set[str] = set()
        self._flushing: asyncio.Task[None] | None = None
        self.later_s = LATER_S

    # ---- running ----------------------------------------------------------

    async def start(self) -> None:
        if self.config.voice.enabled:  # voice calling (语音叫号): screens/voice/
            from screens.voice.announcer import Announcer

            loop = asyncio.get_running_loop()

            def post(action: Callable[[], None]) -> None:
                loop.call_soon_threadsafe(action)  # the worker thread reports to the loop

            self.announcer = Announcer(self.config, post=post, now=self.clock.now)
            self.announcer.start()
        self._runner = web.AppRunner(
            build_app(self), handler_cancellation=True, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen, self.port, backlog=1024)
        await site.start()
        self.bus.start()
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat())
        log.info(
            "screens serving on http://%s:%d/board (%d windows)",
            self.listen,
            self.port,
            len(self.config.windows),
        )

    async def stop(self) -> None:
        for task in (self._beat, self._flushing):
            if task is not None:
                task.cancel()
        await self.raters.close()
        await self.bus.stop()
        if self.announcer is not None:
            await asyncio.to_thread(self.announcer.stop)  # after the announcement playing
        self.hub.close_all()  # open streams end now, not at the shutdown timeout
        if self._runner is not None:
            await self._runner.cleanup()

    async def _heartbeat(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            await asyncio.sleep(1.0)

    # ---- from the broker --------------------------------------------------

    def _on_link(self, up: bool) -> None:
        if up:
            log.info("connected to the broker as %s", DISPLAY_USER)
        else:
            log.warning("lost the broker; the screens show offline until it is back")
        self._publish(self.view.set_connected(up), online_before=not up)

    def _on_message(self, message: Message) -> None:
        topic = message.topic.removeprefix(self.topics.root + "/")
        if self.announcer is not None and topic in VOICE_TOPICS:
            self.announcer.on_event(message.payload)  # it logs and skips what it cannot read
        online = self.view.online
        changes = self.view.feed(topic, message.payload, message.retain, self.clock.now())
        if changes.problem:
            self.garbage += 1
            log.warning("skipped a message the screens cannot read: %s", changes.problem)
            return
        self._publish(changes, online)

    def _publish(self, changes: Changes, online_before: bool) -> None:
        """Fan what changed out to the streams that show it."""
        online_changed = self.view.online != online_before
        hub = self.hub
        for name in hub.listened("board"):
            self._board_deltas(name, changes, online_changed)
        shown = changes.windows | changes.profiles | changes.ratings
        for key in hub.listened("window"):
            if online_changed or int(key) in shown:
                hub.send(f"window:{key}", self.window_snapshot(int(key)))
        # Ticket pages: the ones a message names at once; every other page of a queue
        # that moved later, together (see __init__).
        pages = hub.keys.get("ticket", set())
        if online_changed:
            self._later |= pages
        elif pages:
            self._urgent |= changes.tickets & pages
            if changes.services or changes.windows:
                tickets = self.view.tickets
                self._later |= {
                    t
                    for t in pages
                    # a page of a queue that moved, or of a ticket the view never saw
                    if t not in tickets or tickets[t].service in changes.services
                }
        loop = asyncio.get_running_loop()
        if self._urgent and not self._urgent_scheduled:
            # After this callback: paho folds every message of one read in it (a call's
            # events and window state come together), and the page shows them all.
            self._urgent_scheduled = True
            loop.call_soon(self._send_urgent)
        if self._later and self._flushing is None:
            self._flushing = loop.create_task(self._flush_later())

    def _send_urgent(self) -> None:
        self._urgent_scheduled = False
        urgent, self._urgent = self._urgent, set()
        for ticket_id in urgent:
            self._send_page(ticket_id)

    async def _flush_later(self) -> None:
        """The pages of the queues that moved: `later_s` after the move, when the hall's
        next hall/state (at most 4 a second) has come too, so a call moves each page once,
        not twice; in slices, so the streams write (and named pages go out) in between."""
        try:
            while self._later:
                await asyncio.sleep(self.later_s)
                later, self._later = self._later, set()
                for i, ticket_id in enumerate(later):
                    self._send_page(ticket_id)
                    if i % PAGE_SLICE == PAGE_SLICE - 1:
                        await asyncio.sleep(0)
        finally:
            self._flushing = None

    def _send_page(self, ticket_id: str) -> None:
        channel = f"ticket:{ticket_id}"
        if channel in self.hub.channels:
            self.hub.send(channel, self.ticket_snapshot(ticket_id), only_changed=True)

    def _board_deltas(self, name: str, changes: Changes, online_changed: bool) -> None:
        channel = f"board:{name}"
        spec = self.config.screens.boards.get(name) if name else None
        shown = set(self.view.board_windows(spec))
        if changes.board or online_changed:
            board = self.view.board(spec)
            self.hub.send(
                channel, sse("hall", {"hall": board["hall"], "services": board["services"]})
            )
        for number in sorted(changes.windows & shown):
            self.hub.send(channel, sse("window", self.view.window_cell(number)))
        for call in reversed(changes.calls):
            if call.window in shown:
                self.hub.send(channel, sse("call", call_view(self.view, call)))

    # ---- what the web side asks ---------------------------------------------

    def board_known(self, name: str) -> bool:
        return name == "" or name in self.config.screens.boards

    def board_snapshot(self, name: str) -> bytes:
        spec = self.config.screens.boards.get(name) if name else None
        title = (spec.title if spec else "") or ""
        return sse("snapshot", self.view.board(spec, title))

    def window_known(self, number: int) -> bool:
        return number in self.config.windows

    def window_snapshot(self, number: int) -> bytes:
        view = self.view.window(number, self.clock.now())
        rating = view["rating"]
        if rating is not None:  # the page counts down in real seconds
            rating["remaining_s"] = round(self.clock.real_seconds(rating["remaining_s"]), 1)
        view["touch"] = number in self.raters.windows
        return sse("window", view)

    def ticket_known(self, ticket_id: str, token: str) -> bool:
        if self.page_key is None:
            return False
        return ticketpage.verify(self.page_key, self.config.site.id, ticket_id, token)

    def ticket_snapshot(self, ticket_id: str) -> bytes:
        return sse("ticket", self.view.ticket(ticket_id))

    def photo(self, staff: str) -> Path | None:
        member = self.config.staff.get(staff)
        if member is None or not member.photo:
            return None
        path = (self.config.source.parent / member.photo).resolve()
        try:
            ok = path.is_file() and path.stat().st_size <= 2 << 20
        except OSError:
            return None
        return path if ok and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") else None

    async def rate(self, window: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A touch rating from window `window`'s screen, checked, then sent as its rater."""
        if window not in self.raters.windows:
            return 403, {"ok": False, "error": "this screen takes no ratings"}
        ticket, level, reason = body.get("ticket"), body.get("level"), body.get("reason", "")
        if set(body) - {"ticket", "level", "reason"}:
            return 400, {"ok": False, "error": "unknown field"}
        if not isinstance(ticket, str) or not isinstance(level, int) or isinstance(level, bool):
            return 400, {"ok": False, "error": "ticket and level needed"}
        if not 1 <= level <= 5 or not isinstance(reason, str) or len(reason) > MAX_REASON:
            return 400, {"ok": False, "error": "level 1 to 5, a short reason"}
        if not self.view.rating_open(window, ticket, self.clock.now()):
            return 409, {"ok": False, "error": "no rating open for this ticket here"}
        texts = self.config.texts
        if level <= 2 and reason not in texts.rating_reasons:
            reason = texts.rating_no_reason  # "none of these": the hall needs some reason
        try:
            answer = await self.raters.get(window).rate(ticket, level, reason if level <= 2 else "")
        except RaterUnavailable as exc:
            log.warning("window %d: rating of %s not sent: %s", window, ticket, exc)
            return 503, {"ok": False, "error": "the hall did not answer"}
        if not answer.get("ok"):
            log.warning("window %d: rating of %s refused: %s", window, ticket, answer.get("error"))
            return 409, {"ok": False, "error": (answer.get("error") or {}).get("code", "refused")}
        log.info("window %d: %s rated %d by touch", window, ticket, level)
        return 200, {"ok": True, "changed": bool(answer.get("changed"))}

"""The announcer: hall call events in, announcements out, one at a time, in order.

The screens daemon (or `quhao voice`) owns it: every method here runs in the owner's
thread — its event loop, or an `OwnerLoop` — and the playback worker reports back
through `post` (`loop.call_soon_threadsafe` in asyncio, `OwnerLoop.post` otherwise).

    announcer = Announcer(config, wav_dir, post=loop.call_soon_threadsafe)
    announcer.start()
    ...  for every message on quhao/{site}/event/#:  announcer.on_event(payload)
    announcer.stop()
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quhao.config import SiteConfig
from quhao.messages.events import TicketCalled, TicketRecalled, decode_event
from quhao.wire import decode_object, shown
from screens.voice.player import LOG_NAME, Playback, Post, Renderer, WavFolder, sink_for
from screens.voice.queue import Announcement, AnnouncementQueue, Call, Policy

log = logging.getLogger("screens.voice")

CALL_EVENTS = ("ticket.called", "ticket.recalled")
NUMBER = re.compile(r"^[A-Za-z0-9]{1,16}$")  # a ticket number: prefix letter and digits
MAX_WINDOW = 9999


class Announcer:
    def __init__(
        self,
        config: SiteConfig,
        output: Path | None = None,
        *,
        post: Post,
        now: Callable[[], float] = time.time,
        work_dir: Path | None = None,
    ) -> None:
        """`output`: a folder for one WAV file per announcement (tests, simulation);
        None: what `[voice] output` says. `work_dir`: where the default clip set is
        made and, with the sound card, the log is written (default: a temporary one).
        `now`: the hall's clock, for the log."""
        self.config, self.voice = config, config.voice
        self.now = now
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="quhao-voice-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.queue = AnnouncementQueue(
            Policy(
                self.voice,
                config.site.timezone,
                {s.id: s.name for s in config.services.values()},
            )
        )
        sink = sink_for(self.voice, output)
        folder = sink.folder if isinstance(sink, WavFolder) else self.work_dir
        self.log_file = folder / LOG_NAME
        self.playback = Playback(
            Renderer(self.voice, self.work_dir), sink, self.log_file, post, self._played
        )
        self.skipped = 0  # events that could not be read
        self.announced: list[dict[str, Any]] = []  # the last few records, newest last

    def start(self) -> None:
        self.playback.start()
        log.info(
            "voice announcer ready: mode %s, engine %s, log %s",
            self.voice.mode,
            self.playback.renderer.speech.name,
            self.log_file,
        )

    def stop(self, timeout: float = 5.0) -> None:
        if self.queue.waiting:
            log.warning("stopping with %d announcements not made", len(self.queue.waiting))
        self.playback.stop(timeout)

    # ---- input (owner thread) -----------------------------------------------------

    def on_event(self, payload: bytes | dict[str, Any]) -> Announcement | None:
        """One event from `event/#`: calls and recalls are queued; other events are
        ignored; anything unreadable is logged and skipped."""
        try:
            obj = decode_object(payload) if isinstance(payload, bytes) else payload
            if obj.get("type") not in CALL_EVENTS:
                return None
            event = decode_event(obj)
            if not isinstance(event, TicketCalled | TicketRecalled):
                return None
            number = event.number or event.ticket.rsplit("/", 1)[-1]
            if not NUMBER.match(number):
                raise ValueError(f"not a ticket number: {shown(number)}")
            if not 0 < event.window <= MAX_WINDOW:
                raise ValueError(f"not a window number: {event.window}")
        except (ValueError, ValidationError, AttributeError) as exc:
            self.skipped += 1
            log.warning("event skipped: %s", str(exc).splitlines()[0][:200])
            return None
        return self.on_call(
            event.ticket,
            number,
            event.window,
            event.service or "",
            recall=isinstance(event, TicketRecalled),
            at=event.at,
        )

    def on_call(
        self, ticket: str, number: str, window: int, service: str, recall: bool, at: float
    ) -> Announcement | None:
        """Queue one call (or recall) and start it if the speaker is free."""
        item = self.queue.add(Call(ticket, number, window, service, recall, at), self.now())
        if item is None:
            log.info("duplicate call of %s at window %d: announced once", number, window)
            return None
        log.info(
            "queued %d: %s %s window %d (%s)",
            item.seq,
            "recall" if recall else "call",
            number,
            window,
            item.mode,
        )
        self._next()
        return item

    # ---- playback (owner thread, posted by the worker) ----------------------------

    def _next(self) -> None:
        item = self.queue.next(self.now())
        if item is not None:
            self.playback.submit(item)

    def _played(self, seq: int, record: dict[str, Any]) -> None:
        self.queue.done(seq, self.now())
        self.announced = [*self.announced[-99:], record]
        log.info(
            "announced %d: %s (%s, %s s)",
            seq,
            record.get("text") or record["mode"],
            "ok" if record.get("ok") else record.get("error"),
            record.get("seconds"),
        )
        self._next()

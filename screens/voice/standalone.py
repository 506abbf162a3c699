"""`quhao voice`: the announcer on its own, for a hall that wants voice calling without
the screens daemon; and `quhao voice clips`, the default clip set.

It logs in as the read-only user `voice` (quhao/brokergen.py: it may read the two call
events and nothing else; its own session, so it runs beside the screens daemon), listens
to `event/ticket.called` and `event/ticket.recalled`, and announces each. One owner
thread (`quhao.owner.OwnerLoop`) runs the MQTT socket and the announcement queue; the
playback worker posts back to it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from quhao.brokergen import VOICE_USER
from quhao.clock import Clock
from quhao.config import SiteConfig
from quhao.config.voice import Voice
from quhao.mqtt import Bus, Message, credentials
from quhao.owner import BusDriver, OwnerLoop
from quhao.sdnotify import Notifier
from quhao.topics import Topics
from screens.voice.announcer import CALL_EVENTS, Announcer
from screens.voice.engine import make_clips, vocabulary

log = logging.getLogger("screens.voice")


class VoiceDaemon:
    def __init__(
        self,
        config: SiteConfig,
        broker: str,
        clock: Clock,
        *,
        credentials_dir: Path | None = None,
        out: Path | None = None,
        work_dir: Path,
        user: str = VOICE_USER,
    ) -> None:
        self.topics = Topics(config.site.id)
        self.loop = OwnerLoop("voice-owner")
        # A read-only user's client id is its user name (the broker enforces it); without
        # credentials (a development broker) any distinct client id will do.
        password, tls = credentials(credentials_dir, user)
        named = bool(password or tls)
        self.bus = Bus(
            broker,
            user if named else f"voice-{os.getpid()}",
            username=user if named else None,
            password=password,
            tls=tls,
        )
        work_dir.mkdir(parents=True, exist_ok=True)
        self.announcer = Announcer(
            config, out, post=self.loop.post, now=clock.now, work_dir=work_dir
        )

    @property
    def heartbeat(self) -> float:
        return self.loop.heartbeat

    def start(self) -> None:
        for kind in CALL_EVENTS:
            self.bus.subscribe(self.topics.event(kind), self._on_event)
        # Connected (and subscribed) before the announcer says it is ready.
        BusDriver(self.loop, self.bus).start()
        self.announcer.start()
        self.loop.start()

    def _on_event(self, message: Message) -> None:
        if message.retain:  # an event is never retained: one would be re-announced forever
            log.warning("retained message on %s ignored", message.topic)
            return
        self.announcer.on_event(message.payload)

    def close(self) -> None:
        self.loop.stop()
        self.loop.join(5.0)
        self.announcer.stop()
        self.bus.stop()


def run(
    config: SiteConfig,
    broker: str,
    clock: Clock,
    stop: threading.Event,
    *,
    credentials_dir: Path | None,
    out: Path | None,
    work_dir: Path,
    user: str,
) -> int:
    if not config.voice.enabled:
        log.info("[voice] enabled is false (it tells the screens daemon): announcing anyway")
    daemon = VoiceDaemon(
        config,
        broker,
        clock,
        credentials_dir=credentials_dir,
        out=out,
        work_dir=work_dir,
        user=user,
    )
    daemon.start()
    notifier = Notifier()
    notifier.watch("announcing", lambda: daemon.heartbeat)
    notifier.ready("voice announcer ready")
    notifier.start_watchdog()
    stop.wait()
    notifier.stopping()
    daemon.close()
    return 0


def clips(voice: Voice, out: Path) -> int:
    """`quhao voice clips --out DIR`: the default clip set for the site's templates."""
    words = vocabulary([voice.template, voice.recall_template])
    made = make_clips(out, words, voice.voice, voice.rate)
    print(f"{made} clips made in {out} ({len(words) - made} were there already)")
    return 0

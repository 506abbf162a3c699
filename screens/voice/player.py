"""Playing announcements, off the owner's thread.

`Playback` is one worker thread: the owner hands it an `Announcement` (only when the
queue says nothing else plays), the worker renders it (`Renderer`: chime, then the
text × repeats), plays it on a `SoundCard` or writes it to a `WavFolder`, appends one
line to the JSON lines log, and `post`s `on_done` back to the owner, which then hands
out the next. So announcements never overlap and keep their order, and the owner never
waits for a sound card.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from quhao.config.voice import Voice
from screens.voice.engine import (
    ClipsEngine,
    EspeakEngine,
    Pcm,
    chime,
    make_clips,
    silence,
    vocabulary,
    wav_bytes,
)
from screens.voice.queue import Announcement

log = logging.getLogger("screens.voice")

Post = Callable[[Callable[[], None]], None]
AFTER_CHIME_S = 0.3
BETWEEN_REPEATS_S = 0.7
LOG_NAME = "announcements.jsonl"


class SpeechEngine(Protocol):
    name: str

    def render(self, text: str) -> Pcm: ...


class Renderer:
    """An announcement's sound: the chime, then the text `repeats` times (speech mode),
    the chime alone (chime mode), or nothing (silent)."""

    def __init__(self, voice: Voice, work_dir: Path) -> None:
        self.voice = voice
        self.chime = chime(voice.chime_file)
        self.speech: SpeechEngine = self._engine(voice, work_dir)

    @staticmethod
    def _engine(voice: Voice, work_dir: Path) -> SpeechEngine:
        if voice.engine == "espeak":
            return EspeakEngine(voice.voice, voice.rate)
        folder = voice.clips_dir
        if folder is None:  # the default set, made once from espeak-ng
            folder = work_dir / f"voice-clips-{voice.voice}-{voice.rate}"
            made = make_clips(
                folder, vocabulary([voice.template, voice.recall_template]), voice.voice, voice.rate
            )
            if made:
                log.info("made %d voice clips with espeak-ng in %s", made, folder)
        return ClipsEngine(folder)

    def render(self, item: Announcement) -> Pcm:
        if item.mode == "silent":
            return Pcm()
        if item.mode == "chime" or item.text is None:
            return self.chime
        speech = self.speech.render(item.text)
        spoken = [speech] * item.repeats
        gap = silence(BETWEEN_REPEATS_S)
        return self.chime + silence(AFTER_CHIME_S) + Pcm(gap.data.join(s.data for s in spoken))


class Sink(Protocol):
    def play(self, item: Announcement, pcm: Pcm) -> str | None:
        """Play (or store) one announcement; what to log as its file, if any."""
        ...


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text)[:16]


class WavFolder:
    """Each announcement one WAV file, named in order: `000001-A001.wav`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def play(self, item: Announcement, pcm: Pcm) -> str | None:
        if not pcm.data:
            return None
        target = self.folder / f"{item.seq:06d}-{_safe(item.call.number)}.wav"
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(wav_bytes(pcm))
        os.replace(partial, target)  # a reader never sees half a file
        return target.name


def player_command(spec: str) -> list[str]:
    """`auto`: aplay (ALSA) if installed, else paplay (PulseAudio), else sox's default
    device; `aplay`, `paplay`, `sox` by name; anything else is a command line that plays
    a WAV read from its standard input."""
    known = {
        "aplay": ["aplay", "-q", "-"],
        "paplay": ["paplay"],
        "sox": ["sox", "-q", "-t", "wav", "-", "-d"],
    }
    if spec == "auto":
        return next(
            (known[name] for name in ("aplay", "paplay") if shutil.which(name)), known["sox"]
        )
    return known.get(spec) or shlex.split(spec)


class SoundCard:
    """Plays each announcement to the end (the worker waits, so none overlaps)."""

    def __init__(self, command: list[str]) -> None:
        self.command = command

    def play(self, item: Announcement, pcm: Pcm) -> str | None:
        if not pcm.data:
            return None
        done = subprocess.run(
            self.command,
            input=wav_bytes(pcm),
            capture_output=True,
            timeout=pcm.seconds + 15,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{self.command[0]} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()[:300]}"
            )
        return None


def sink_for(voice: Voice, wav_dir: Path | None = None) -> Sink:
    """A folder of WAV files (given, or `output = "wav"`), else the sound card."""
    if wav_dir is not None or voice.output == "wav":
        return WavFolder(wav_dir or voice.wav_dir)
    return SoundCard(player_command(voice.player))


@dataclass
class Playback:
    """The worker thread. `submit` and `stop` are called by the owner; `on_done(seq,
    record)` is posted back to it once an announcement has played (or failed)."""

    renderer: Renderer
    sink: Sink
    log_file: Path | None
    post: Post
    on_done: Callable[[int, dict[str, Any]], None]
    _jobs: queue.SimpleQueue[Announcement | None] = field(default_factory=queue.SimpleQueue)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="voice-playback", daemon=True)
        self._thread.start()

    def submit(self, item: Announcement) -> None:
        self._jobs.put(item)

    def stop(self, timeout: float = 5.0) -> None:
        """Ends after the announcement playing now."""
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            record = self._play(item)
            self._log(record)
            self.post(functools.partial(self.on_done, item.seq, record))

    def _play(self, item: Announcement) -> dict[str, Any]:
        call = item.call
        record: dict[str, Any] = {
            "seq": item.seq,
            "ticket": call.ticket,
            "number": call.number,
            "window": call.window,
            "service": call.service,
            "recall": call.recall,
            "at": call.at,
            "mode": item.mode,
            "text": item.text,
            "repeats": item.repeats if item.mode == "speech" else 0,
            "engine": self.renderer.speech.name if item.mode == "speech" else None,
            "queued": item.queued_at,
            "started": time.time(),
        }
        try:
            began = time.perf_counter()
            pcm = self.renderer.render(item)
            record["render_ms"] = round((time.perf_counter() - began) * 1000, 1)
            record["seconds"] = round(pcm.seconds, 3)
            record["file"] = self.sink.play(item, pcm)
            record["ok"] = True
        except Exception as exc:  # one failed announcement must not stop the next
            log.error(
                "announcement %d (%s at window %d) failed: %s",
                item.seq,
                call.number,
                call.window,
                exc,
            )
            record["ok"], record["error"] = False, str(exc)[:300]
        record["finished"] = time.time()
        return record

    def _log(self, record: dict[str, Any]) -> None:
        if self.log_file is None:
            return
        try:
            with self.log_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:
            log.error("cannot write %s: %s", self.log_file, exc)

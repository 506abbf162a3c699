"""Sound for announcements: speech from espeak-ng or from recorded clips, and the chime.

Everything is brought to one format — 22,050 Hz, mono, 16-bit signed PCM (`Pcm`) — so
the pieces of an announcement (chime, speech, pauses, repeats) are joined as bytes.
sox reads whatever a hall records (any rate, stereo, FLAC…) into that format.

- `EspeakEngine`: offline text-to-speech with espeak-ng. Its voice `cmn-latn-pinyin`
  reads a Latin letter inside Chinese as a letter name (A → "ei", B → "bi"); the plain
  `cmn` voice of Debian bookworm's espeak-ng 1.51 reads common characters (请, 到, 号,
  四) and the rest of a sentence after a letter with its English voice.
- `ClipsEngine`: a folder of WAV clips named after what they say (`请.wav`, `A.wav`,
  `零.wav`, `号窗口.wav` …). Each word of the text is cut into the longest clip names
  that spell it, so a hall records whole words where it likes and characters elsewhere.
  `make_clips` writes a default set with espeak-ng (`quhao voice clips --out DIR`).
- `chime`: a two-tone ding-dong made with sox's synth, or a hall's own file.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tempfile
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from screens.voice.text import DIGITS

log = logging.getLogger("screens.voice")

RATE = 22050  # samples a second (espeak-ng's own rate)
SAMPLE_BYTES = 2
RAW = ["-t", "raw", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", "-L"]
TIMEOUT_S = 30.0
# Cut a clip's leading and trailing silence (below 0.5 % of full scale) so joined clips
# flow; espeak-ng pads every utterance.
TRIM = ["silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse"]
PIECE_GAP_S = 0.03  # between clips inside one word (零 零 一)
WORD_GAP_S = 0.12  # between the words of the text
# Besides the templates' own words: what numbers are made of.
BASE_VOCABULARY = (*DIGITS, "十", "百", "千", "万", "亿", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class Pcm:
    """Mono 16-bit little-endian samples at RATE."""

    data: bytes = b""

    @property
    def seconds(self) -> float:
        return len(self.data) / (SAMPLE_BYTES * RATE)

    def __add__(self, other: Pcm) -> Pcm:
        return Pcm(self.data + other.data)

    def __mul__(self, times: int) -> Pcm:
        return Pcm(self.data * times)


def silence(seconds: float) -> Pcm:
    return Pcm(bytes(SAMPLE_BYTES * round(seconds * RATE)))


def join(pieces: Iterable[Pcm], gap: Pcm) -> Pcm:
    return Pcm(gap.data.join(piece.data for piece in pieces))


def _run(args: list[str], stdin: bytes | None = None) -> bytes:
    done = subprocess.run(args, input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def read_audio(path: Path, trim: bool = False) -> Pcm:
    """Any audio file sox reads, as Pcm."""
    return Pcm(_run(["sox", "-q", str(path), *RAW, "-", *(TRIM if trim else [])]))


def wav_bytes(pcm: Pcm) -> bytes:
    """The samples as a WAV file's bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_BYTES)
        out.setframerate(RATE)
        out.writeframes(pcm.data)
    return buffer.getvalue()


def chime(file: Path | None = None) -> Pcm:
    """Ding-dong: E5 then C5, each with a fast attack and a bell-like fade; or a hall's
    own chime file."""
    if file is not None:
        return read_audio(file)
    tones = [
        ["synth", "0.55", "sine", "659.25", "fade", "q", "0.01", "0.55", "0.45", "vol", "0.5"],
        ["synth", "0.85", "sine", "523.25", "fade", "q", "0.01", "0.85", "0.75", "vol", "0.5"],
    ]
    return Pcm(b"".join(_run(["sox", "-q", "-n", *RAW, "-", *tone]) for tone in tones))


class EspeakEngine:
    """espeak-ng, offline: the text in, WAV out (`-w`), read back as Pcm."""

    name = "espeak"

    def __init__(self, voice: str, rate: int) -> None:
        self.voice, self.rate = voice, rate

    def render(self, text: str) -> Pcm:
        with tempfile.TemporaryDirectory(prefix="quhao-voice-") as tmp:
            out = Path(tmp) / "speech.wav"
            # "--" ends the options: a text starting with "-" is still text.
            _run(["espeak-ng", "-v", self.voice, "-s", str(self.rate), "-w", str(out), "--", text])
            with wave.open(str(out), "rb") as wav:
                if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE):
                    return Pcm(wav.readframes(wav.getnframes()))
            return read_audio(out)


class ClipsEngine:
    """Recorded clips, one WAV a word or character, joined in the order of the text."""

    name = "clips"
    MAX_WORD = 8  # the longest clip name tried, in characters

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = {
            path.stem: path
            for path in sorted(folder.iterdir())
            if path.suffix.lower() in (".wav", ".flac", ".ogg") and path.is_file()
        }
        if not self.files:
            raise FileNotFoundError(f"no clips (*.wav) in {folder}")
        self._cache: dict[str, Pcm] = {}
        self.missing: set[str] = set()  # characters no clip says: logged once each

    def clip(self, name: str) -> Pcm:
        if name not in self._cache:
            self._cache[name] = read_audio(self.files[name], trim=True)
        return self._cache[name]

    def pieces(self, word: str) -> list[str]:
        """The word cut into the longest clip names, left to right; a character no clip
        says is left out (and logged once)."""
        out, i = [], 0
        while i < len(word):
            for end in range(min(len(word), i + self.MAX_WORD), i, -1):
                if word[i:end] in self.files:
                    out.append(word[i:end])
                    i = end
                    break
            else:
                if word[i] not in self.missing:
                    self.missing.add(word[i])
                    log.warning("no clip says %r in %s: left out", word[i], self.folder)
                i += 1
        return out

    def render(self, text: str) -> Pcm:
        words = [
            join((self.clip(p) for p in self.pieces(word)), silence(PIECE_GAP_S))
            for word in text.split()
        ]
        return join((w for w in words if w.data), silence(WORD_GAP_S))


def vocabulary(templates: Iterable[str]) -> list[str]:
    """What a clip set needs for these templates: each literal word, each of its
    characters, digits, number units and letters."""
    words: dict[str, None] = dict.fromkeys(BASE_VOCABULARY)
    for template in templates:
        for word in template.replace("{", " {").replace("}", "} ").split():
            if word.startswith("{"):
                continue
            words.setdefault(word)
            for char in word:
                words.setdefault(char)
    return [w for w in words if _file_name_ok(w)]


def _file_name_ok(word: str) -> bool:
    return bool(word) and "/" not in word and not word.startswith(".") and "\0" not in word


def make_clips(out: Path, words: Iterable[str], voice: str, rate: int) -> int:
    """Write `{word}.wav` for each word with espeak-ng; returns how many were written.
    Clips already there are kept (a hall's own recordings win)."""
    out.mkdir(parents=True, exist_ok=True)
    engine = EspeakEngine(voice, rate)
    made = 0
    for word in words:
        target = out / f"{word}.wav"
        if target.exists() or not _file_name_ok(word):
            continue
        pcm = engine.render(word)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(wav_bytes(pcm))
        os.replace(partial, target)  # a clip is whole or absent
        made += 1
    return made

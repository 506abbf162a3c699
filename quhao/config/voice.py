"""The site file's `[voice]` table: voice calling (语音叫号) — when and how calls are
announced in the hall (docs/configuration.md, docs/screens.md "Voice calling").

Its own module so the site model only hooks it in; `screens.voice` reads it.
"""

from __future__ import annotations

import re
import string
from datetime import time as dtime
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

Mode = Literal["speech", "chime", "silent"]
MODES: tuple[Mode, ...] = get_args(Mode)  # loudest first
QuietMode = Literal["chime", "silent"]
Engine = Literal["espeak", "clips"]
Output = Literal["device", "wav"]
# What an announcement template may say. {number} and {window} are read out in Chinese
# (A001 → "A 零零一", 12 → "十二"); {service} is the service's name.
TEMPLATE_FIELDS = frozenset({"number", "window", "service"})
DEFAULT_TEMPLATE = "请 {number} 号 到 {window} 号窗口 办理"
DEFAULT_RECALL_TEMPLATE = "请 {number} 号 再次 到 {window} 号窗口"
# espeak-ng's Mandarin voice that reads a Latin letter inside Chinese text as a letter
# name (A → "ei"); bookworm's plain `cmn` reads 请, 到, 号 … with English sounds.
DEFAULT_VOICE = "cmn-latn-pinyin"


def _template(value: str) -> str:
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as exc:
        raise ValueError(f"bad template {value!r}: {exc}") from exc
    unknown = used - TEMPLATE_FIELDS
    if unknown:
        allowed = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
        raise ValueError(
            f"unknown placeholder {{{sorted(unknown)[0]}}} in {value!r} (allowed: {allowed})"
        )
    if not value.strip():
        raise ValueError("a template must say something")
    return value


Template = Annotated[StrictStr, Field(max_length=200), AfterValidator(_template)]


def _quiet_hours(value: Any) -> Any:
    """["12:00-13:30", "22:00-06:00"] → ((start, end), …); a span may run past midnight."""
    if not isinstance(value, list):
        return value  # pydantic says what it must be
    spans: list[tuple[dtime, dtime]] = []
    for span in value:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", str(span))
        if not match:
            raise ValueError(f'each span must look like "12:00-13:30", got {span!r}')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2, m2) > (24, 0) or (h1, m1) == (h2, m2):
            raise ValueError(f"not a span of the day: {span!r}")
        spans.append((dtime(h1, m1), dtime(0, 0) if h2 == 24 else dtime(h2, m2)))
    return tuple(spans)


class Voice(BaseModel):
    """`[voice]`: every key optional; without the table nothing is announced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The screens daemon runs the announcer only when enabled (`quhao voice` always does).
    enabled: StrictBool = False
    # speech: chime, then the text; chime: the chime alone; silent: nothing at all.
    mode: Mode = "speech"
    template: Template = DEFAULT_TEMPLATE
    recall_template: Template = DEFAULT_RECALL_TEMPLATE
    repeats: Annotated[StrictInt, Field(ge=1, le=5, description="must be 1 to 5")] = 2
    # Once more than this many announcements wait, each is spoken once (not `repeats`
    # times) so the backlog drains faster; none is dropped.
    burst: Annotated[StrictInt, Field(ge=0, le=1000, description="must be 0 to 1000")] = 3
    engine: Engine = "espeak"
    # A folder of WAV clips per word or character (clips engine), relative to the site
    # file; empty: a clip set made with espeak-ng on first use.
    clips_dir: FsPath | None = None
    voice: Annotated[
        StrictStr, Field(pattern=r"^[A-Za-z0-9_+-]{1,40}$", description="an espeak-ng voice")
    ] = DEFAULT_VOICE
    rate: Annotated[
        StrictInt, Field(ge=80, le=450, description="must be 80 to 450 words a minute")
    ] = 150
    # A hall's own chime (any WAV sox reads), relative to the site file; empty: ding-dong.
    chime_file: FsPath | None = None
    output: Output = "device"
    # device: "auto" (aplay, else paplay, else sox -d) or a command that plays a WAV
    # read from its standard input.
    player: Annotated[StrictStr, Field(min_length=1, max_length=200)] = "auto"
    # wav: one WAV file per announcement and announcements.jsonl here (site-file relative).
    wav_dir: FsPath = FsPath("voice")
    # Per service id: a quieter mode for that service ("chime" or "silent").
    services: dict[StrictStr, Mode] = {}
    # Spans of the day (hall time) when quiet_mode applies instead of mode.
    quiet_hours: Annotated[tuple[tuple[dtime, dtime], ...], BeforeValidator(_quiet_hours)] = ()
    quiet_mode: QuietMode = "chime"

    @field_validator("clips_dir", "chime_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("clips_dir", "chime_file", "wav_dir")
    @classmethod
    def _beside_the_site_file(cls, value: FsPath | None, info: ValidationInfo) -> FsPath | None:
        file = (info.context or {}).get("file")
        return FsPath(file).parent / value if value is not None and file else value

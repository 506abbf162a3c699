"""Site configuration: one TOML file describes a hall.

Loading validates everything up front (`model`: pydantic models of the file's tables
and the rules between them) and reports every problem at once as a `ConfigError`,
one line each, sorted by line, naming the file, the line and the dotted key, e.g.
``site.toml:42: services[3].prefix: must be one capital letter A-Z, got 'aa'``.
Unknown keys are errors too: a typo must not silently fall back to a default.
`check` then finds what the daemons would refuse at start (the secret, device URIs).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from quhao.config.errors import ConfigError, Problem, dotted, problems_from
from quhao.config.model import (
    DAY_END_POLICIES,
    DEVICE_NAME,
    PRIORITY_KINDS,
    PUBLISHED_SECRETS,
    TEXT_FIELDS,
    TICKET_FIELDS,
    TICKET_STYLES,
    WEEKDAYS,
    CallerKeys,
    Counter,
    Devices,
    Keys,
    Kiosk,
    KioskKeys,
    Limits,
    Privacy,
    QueueRules,
    Quota,
    Rate,
    RatingKeys,
    Service,
    Site,
    SiteConfig,
    Staff,
    Texts,
    TicketTemplate,
    Window,
    is_published_secret,
)
from quhao.config.startup import check
from quhao.tomlpos import Path, key_lines, line_of

__all__ = [
    "DAY_END_POLICIES",
    "DEVICE_NAME",
    "PRIORITY_KINDS",
    "PUBLISHED_SECRETS",
    "TEXT_FIELDS",
    "TICKET_FIELDS",
    "TICKET_STYLES",
    "WEEKDAYS",
    "CallerKeys",
    "ConfigError",
    "Counter",
    "Devices",
    "Keys",
    "Kiosk",
    "KioskKeys",
    "Limits",
    "Privacy",
    "Problem",
    "QueueRules",
    "Quota",
    "Rate",
    "RatingKeys",
    "Service",
    "Site",
    "SiteConfig",
    "Staff",
    "Texts",
    "TicketTemplate",
    "Window",
    "check",
    "is_published_secret",
    "load",
    "loads",
]


def load(path: str | FsPath) -> SiteConfig:
    file = FsPath(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.one(str(file), None, "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError.one(str(file), None, "", f"not UTF-8: {exc}") from exc
    return loads(text, file)


def loads(text: str, file: str | FsPath = "site.toml") -> SiteConfig:
    file = FsPath(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError.one(str(file), line, "", f"TOML syntax: {exc}") from exc
    lines = key_lines(text)
    found: list[tuple[Path, str]] = []  # what the rules between tables report
    context: dict[str, Any] = {"file": file, "problems": found}
    problems: list[Problem] = []
    try:
        config = SiteConfig.model_validate(data, context=context)
    except ValidationError as exc:
        problems = problems_from(exc, SiteConfig, str(file), lines)
    problems += [Problem(str(file), line_of(lines, p), dotted(p), m) for p, m in found]
    if problems:
        raise ConfigError(problems)
    config._source = file
    config._lines = lines
    return config

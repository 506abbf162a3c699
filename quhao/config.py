"""Site configuration: one TOML file describes a hall.

Loading validates everything up front. A mistake is reported as a
`ConfigError` that names the file, the line and the key, e.g.
``site.toml:42: services[3].prefix: must be one capital letter A-Z, got "aa"``.
Unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time as dtime
from pathlib import Path as FsPath
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from quhao.tomlpos import Path, key_lines, line_of

PRIORITY_KINDS = ("elderly", "appointment", "green")
DAY_END_POLICIES = ("expire", "carry_over")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# SHA-256 of secrets published with this repository (examples/site.secret): person keys
# made with them are the same at every hall that copied one, and reversible by anybody
# who enumerates ID numbers. Only a simulated hall may use them.
PUBLISHED_SECRETS = frozenset({"104bc7479f0183355e29f2861e01e8a96cefc3ae913a5b62f4e219bce6cb53b6"})


class ConfigError(ValueError):
    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True)
class Quota:
    tickets: int
    seconds: int


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    prefix: str
    daily_cap: int | None = None
    quota: Quota | None = Quota(2, 7200)
    priorities: frozenset[str] = frozenset(PRIORITY_KINDS)
    id_required: bool = True
    max_wait_s: int = 3600
    expected_service_s: int = 480
    department: str = ""


@dataclass(frozen=True)
class Window:
    number: int
    services: dict[str, float]  # service id -> weight (一窗受理)
    name: str = ""


@dataclass(frozen=True)
class Staff:
    id: str
    name: str
    photo: str = ""
    pledge: str = ""
    services: tuple[str, ...] = ()
    can_override: bool = False
    cards: tuple[str, ...] = ()  # staff card UIDs, upper-case hex
    pin_hash: str = ""  # PBKDF2 hash of the staff PIN (`quhao staff pin`); empty: card only


@dataclass(frozen=True)
class Kiosk:
    name: str
    services: tuple[str, ...]  # F1, F2, ... in this order
    readers: tuple[str, ...] = ()
    keypad: str = ""
    printer: str = ""
    card_absent_ms: int = 500  # a card counts as removed only after this long unseen


@dataclass(frozen=True)
class Counter:
    name: str
    window: int
    keypad: str = ""
    display: str = ""
    rating: str = ""
    reader: str = ""
    card_absent_ms: int = 500


@dataclass(frozen=True)
class QueueRules:
    interleave: int = 3  # at most this many priority calls in a row while ordinary tickets wait
    max_recalls: int = 3  # one more recall turns into a skip
    reinstate_behind: int = 3  # a reinstated no-show goes behind this many waiting tickets
    elderly_age: int = 60
    number_width: int = 3
    rating_timeout_s: int = 30
    require_login: bool = False


@dataclass(frozen=True)
class Rate:
    """A token bucket: `per_s` requests a second on average, `burst` at once."""

    per_s: float
    burst: int


@dataclass(frozen=True)
class Limits:
    """What one device may ask of the hall (real seconds), and when the disk is low.

    Defaults a real device never meets: a kiosk issues a ticket in no less than a few
    seconds of a citizen's time; a clerk presses a key or two a second at most."""

    kiosk: Rate = Rate(1.0, 5)
    counter: Rate = Rate(5.0, 20)
    disk_low_mb: int = 200  # device/hall/status says disk_low below this much free space


@dataclass(frozen=True)
class Privacy:
    # A person key is erased from the hall's store at the end of the Nth day after the
    # ticket's day (1: the end of the next day) — no quota window can need it later.
    person_key_days: int = 1


@dataclass(frozen=True)
class CallerKeys:
    call: str = "KEY_KPENTER"  # call next (finishes the current ticket); also ends digit entry
    recall: str = "KEY_KPPLUS"
    skip: str = "KEY_KPMINUS"
    finish: str = "KEY_KPDOT"
    pause: str = "KEY_KPASTERISK"  # toggles pause / resume
    transfer: str = "KEY_KPSLASH"  # then the service number, then call key
    logout: str = "KEY_NUMLOCK"


@dataclass(frozen=True)
class RatingKeys:
    # 非常满意, 满意, 基本满意, 不满意, 非常不满意: levels 5 … 1
    levels: tuple[str, ...] = ("KEY_1", "KEY_2", "KEY_3", "KEY_4", "KEY_5")


@dataclass(frozen=True)
class KioskKeys:
    services: tuple[str, ...] = tuple(f"KEY_F{i}" for i in range(1, 13))
    enter: str = "KEY_ENTER"
    backspace: str = "KEY_BACKSPACE"
    cancel: str = "KEY_ESC"
    appointment: str = "KEY_A"  # pressed before the card: the ticket takes the appointment lane
    staff: str = "KEY_S"  # then staff number, Enter, PIN, Enter: authorises one override ticket
    green: str = "KEY_G"  # after a staff authorisation: the ticket takes the green channel


@dataclass(frozen=True)
class Keys:
    caller: CallerKeys = CallerKeys()
    rating: RatingKeys = RatingKeys()
    kiosk: KioskKeys = KioskKeys()


# Placeholders each template may use.
TEXT_FIELDS: dict[str, set[str]] = {
    "display_call": {"ticket", "window", "service"},
    "display_paused": {"window", "staff", "staff_name"},
    "display_idle": {"window", "staff", "staff_name"},
    "display_closed": {"window"},
    "quota_slip": {"service", "limit", "hours"},
    "ticket_notice": set(),
}


@dataclass(frozen=True)
class Texts:
    """What citizens read. Chinese by default; every one can be changed in [texts]."""

    display_call: str = "请 {ticket} 号到 {window} 号窗口"
    display_paused: str = "暂停服务"
    display_idle: str = "{window}号窗口 {staff_name} {staff}"
    display_closed: str = "{window}号窗口"
    quota_slip: str = "额满再取须咨询工作人员"
    ticket_notice: str = "过号无效，请留意叫号"
    rating_reasons: tuple[str, ...] = (
        "等候时间长",
        "服务态度差",
        "业务不熟练",
        "一次告知不清",
        "其他",
    )
    rating_no_reason: str = "未说明原因"


TICKET_FIELDS = {
    "hall_name",
    "service_name",
    "number",
    "ahead",
    "date",
    "time",
    "masked_id",
    "priority",
    "notice",
    "kiosk",
    "service",
    "slip",
}
TICKET_STYLES = ("center", "left", "right", "bold", "big", "large")


@dataclass(frozen=True)
class TicketTemplate:
    """The ticket, line by line. A line may start with style marks ({center}, {left},
    {right}, {bold}, {large} 2x, {big} 3x); a line that is just {qr} prints the
    ticket's QR code. Placeholders: see TICKET_FIELDS."""

    lines: tuple[str, ...] = (
        "{center}{bold}{hall_name}",
        "{center}{large}{service_name}",
        "{center}{big}{number}",
        "{center}您前面还有 {ahead} 人等候",
        "{center}{priority}",
        "{center}取号时间 {date} {time}",
        "{center}证件号 {masked_id}",
        "{qr}",
        "{center}{notice}",
    )
    slip_lines: tuple[str, ...] = (
        "{center}{bold}{hall_name}",
        "{center}{large}{service_name}",
        "{center}{large}{slip}",
        "{center}{date} {time}",
        "{center}证件号 {masked_id}",
    )


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    timezone: ZoneInfo
    hours: tuple[tuple[dtime, dtime | None], ...]  # end None: until midnight (24:00)
    days: frozenset[int]  # 0 = Monday
    secret_file: FsPath | None = None
    # What happens to tickets still waiting when the day ends: "expire" (closed as
    # expired at the end of opening hours, so every day's record closes) or "carry_over"
    # (a 24-hour or late hall: they keep their place, issue time and priority).
    day_end: str = "expire"
    # "expire" happens this long after the last opening span ends (hours are when tickets
    # are issued; a hall may keep serving the ones issued a while after that).
    expire_after_s: int = 0
    allow_example_secret: bool = False  # a simulated hall (demo, tests, `--allow-example-secret`)


@dataclass(frozen=True)
class SiteConfig:
    site: Site
    rules: QueueRules
    services: dict[str, Service]
    windows: dict[int, Window]
    staff: dict[str, Staff]
    kiosks: dict[str, Kiosk]
    counters: dict[str, Counter]
    keys: Keys = Keys()
    texts: Texts = Texts()
    ticket: TicketTemplate = TicketTemplate()
    limits: Limits = Limits()
    privacy: Privacy = Privacy()
    source: FsPath = field(default_factory=lambda: FsPath("site.toml"))

    def device_role(self, device: str) -> str | None:
        if device in self.kiosks:
            return "kiosk"
        if device in self.counters:
            return "counter"
        return None

    def staff_by_card(self, uid: str) -> Staff | None:
        uid = uid.upper()
        return next((s for s in self.staff.values() if uid in s.cards), None)

    def read_secret(self) -> bytes:
        """The site secret keying person pseudonyms (HMAC). Kept out of the TOML on purpose."""
        if self.site.secret_file is None:
            raise ConfigError(str(self.source), None, "site.secret_file", "not set")
        try:
            secret = self.site.secret_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                str(self.source), None, "site.secret_file", f"cannot read: {exc}"
            ) from exc
        if len(secret) < 16:
            raise ConfigError(
                str(self.source), None, "site.secret_file", "secret shorter than 16 bytes"
            )
        if is_published_secret(secret) and not self.site.allow_example_secret:
            raise ConfigError(
                str(self.source),
                None,
                "site.secret_file",
                f"{self.site.secret_file} is the published example secret: person keys made "
                "with it are the same at every hall that copied it and can be reversed by "
                "enumerating ID numbers; make this hall's own with `quhao secret gen --out "
                "FILE` (a simulated hall may pass --allow-example-secret)",
            )
        return secret


def is_published_secret(secret: bytes) -> bool:
    return hashlib.sha256(secret.strip()).hexdigest() in PUBLISHED_SECRETS


T = TypeVar("T")


class _Reader:
    """Takes typed values out of parsed TOML, remembering where each key was written."""

    def __init__(self, file: FsPath, text: str) -> None:
        self.file = file
        self.lines = key_lines(text)

    def fail(self, path: Path, message: str) -> ConfigError:
        return ConfigError(str(self.file), line_of(self.lines, path), _dotted(path), message)

    def table(self, data: Any, path: Path, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path, f"must be a table, got {_kind(data)}")
        for key in data:
            if key not in allowed:
                raise self.fail(
                    (*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        return data

    def get(
        self,
        table: dict[str, Any],
        path: Path,
        key: str,
        kind: type[T] | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(path, f"missing required key '{key}'")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail((*path, key), f"must be {names}, got {_kind(value)} {value!r}")
        if check:
            problem = check(value)
            if problem:
                raise self.fail((*path, key), problem)
        return value


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _positive(value: int | float) -> str | None:
    return None if value > 0 else f"must be positive, got {value}"


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be zero or more, got {value}"


def _parse_hours(spans: list[Any]) -> tuple[tuple[dtime, dtime | None], ...] | str:
    parsed: list[tuple[dtime, dtime | None]] = []
    for span in spans:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", str(span))
        if not match:
            return f'each span must look like "08:30-12:00", got {span!r}'
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2, m2) > (24, 0):
            return f"not a time of day: {span!r}"
        start = dtime(h1, m1)
        end = None if h2 == 24 else dtime(h2, m2)  # 24:00 is the end of the day itself
        if end is not None and end <= start:
            return f"span ends before it starts: {span!r}"
        parsed.append((start, end))
    return tuple(sorted(parsed, key=lambda span: span[0]))


def load(path: str | FsPath) -> SiteConfig:
    file = FsPath(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), None, "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(file), None, "", f"not UTF-8: {exc}") from exc
    return loads(text, file)


def loads(text: str, file: str | FsPath = "site.toml") -> SiteConfig:
    file = FsPath(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            str(file), int(match.group(1)) if match else None, "", f"TOML syntax: {exc}"
        ) from exc
    r = _Reader(file, text)
    top = r.table(
        data,
        (),
        {
            "site",
            "queue",
            "services",
            "windows",
            "staff",
            "kiosks",
            "counters",
            "keys",
            "texts",
            "ticket",
            "limits",
            "privacy",
        },
    )
    site = _site(r, top, file)
    rules = _rules(r, top)
    services = _services(r, top, rules)
    windows = _windows(r, top, services)
    staff = _staff(r, top, services)
    kiosks = _kiosks(r, top, services)
    counters = _counters(r, top, windows, kiosks)
    keys = _keys(r, top)
    texts = _texts(r, top)
    ticket = _ticket(r, top)
    limits = _limits(r, top)
    privacy = _privacy(r, top, services)
    return SiteConfig(
        site,
        rules,
        services,
        windows,
        staff,
        kiosks,
        counters,
        keys,
        texts,
        ticket,
        limits,
        privacy,
        file,
    )


def _rate(r: _Reader, table: dict[str, Any], path: Path, key: str, default: Rate) -> Rate:
    if key not in table:
        return default
    at: Path = (*path, key)
    t = r.table(table[key], at, {"per_s", "burst"})
    return Rate(
        float(r.get(t, at, "per_s", (int, float), default.per_s, _positive)),
        r.get(t, at, "burst", int, default.burst, _positive),
    )


def _limits(r: _Reader, top: dict[str, Any]) -> Limits:
    path: Path = ("limits",)
    t = r.table(top.get("limits", {}), path, {"kiosk", "counter", "disk_low_mb"})
    d = Limits()
    return Limits(
        _rate(r, t, path, "kiosk", d.kiosk),
        _rate(r, t, path, "counter", d.counter),
        r.get(t, path, "disk_low_mb", int, d.disk_low_mb, _non_negative),
    )


def _privacy(r: _Reader, top: dict[str, Any], services: dict[str, Service]) -> Privacy:
    path: Path = ("privacy",)
    t = r.table(top.get("privacy", {}), path, {"person_key_days"})
    days = r.get(t, path, "person_key_days", int, Privacy().person_key_days, _positive)
    longest = max((s.quota.seconds for s in services.values() if s.quota), default=0)
    if days * 86400 < longest:
        raise r.fail(
            (*path, "person_key_days"),
            f"keys must outlive the longest quota window ({longest // 3600} hours)",
        )
    return Privacy(days)


def _ticket(r: _Reader, top: dict[str, Any]) -> TicketTemplate:

    path: Path = ("ticket",)
    t = r.table(top.get("ticket", {}), path, {"lines", "slip_lines"})
    d = TicketTemplate()
    out = {}
    for name in ("lines", "slip_lines"):
        lines = r.get(t, path, name, list, list(getattr(d, name)))
        for line in lines:
            if not isinstance(line, str):
                raise r.fail((*path, name), "each line must be a string")
            _check_template(
                r,
                (*path, name),
                line,
                TICKET_FIELDS | set(TICKET_STYLES) | {"qr"},
                shown=TICKET_FIELDS,
            )
        out[name] = tuple(lines)
    return TicketTemplate(**out)


def _check_template(
    r: _Reader, path: Path, template: str, allowed: set[str], shown: set[str] | None = None
) -> None:
    """A format template may use only the allowed placeholders (the error lists `shown`)."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise r.fail(path, f"bad template {template!r}: {exc}") from exc
    unknown = used - allowed
    if unknown:
        names = ", ".join("{" + a + "}" for a in sorted(shown or allowed)) or "none"
        raise r.fail(
            path, f"unknown placeholder {{{sorted(unknown)[0]}}} in {template!r} (allowed: {names})"
        )


def _key_name(value: str) -> str | None:

    from evdev import ecodes

    return (
        None
        if value.startswith("KEY_") and value in ecodes.ecodes
        else (f"unknown key name {value!r} (use Linux names like KEY_KPENTER)")
    )


def _keys(r: _Reader, top: dict[str, Any]) -> Keys:
    path: Path = ("keys",)
    t = r.table(top.get("keys", {}), path, {"caller", "rating", "kiosk"})
    caller_path: Path = ("keys", "caller")
    ct = r.table(t.get("caller", {}), caller_path, set(CallerKeys.__dataclass_fields__))
    d = CallerKeys()
    caller = CallerKeys(
        **{
            name: r.get(ct, caller_path, name, str, getattr(d, name), _key_name)
            for name in CallerKeys.__dataclass_fields__
        }
    )
    if len(set(vars(caller).values())) != len(vars(caller)):
        raise r.fail(caller_path, "two caller actions share one key")
    rating_path: Path = ("keys", "rating")
    rt = r.table(t.get("rating", {}), rating_path, {"levels"})
    levels = r.get(rt, rating_path, "levels", list, list(RatingKeys().levels))
    if len(levels) != 5 or any(_key_name(k) for k in levels if isinstance(k, str)):
        raise r.fail(
            (*rating_path, "levels"), "five key names: 非常满意, 满意, 基本满意, 不满意, 非常不满意"
        )
    kiosk_path: Path = ("keys", "kiosk")
    kt = r.table(t.get("kiosk", {}), kiosk_path, set(KioskKeys.__dataclass_fields__))
    kd = KioskKeys()
    service_keys = r.get(kt, kiosk_path, "services", list, list(kd.services))
    for key in service_keys:
        problem = _key_name(str(key))
        if problem:
            raise r.fail((*kiosk_path, "services"), problem)
    kiosk = KioskKeys(
        tuple(service_keys),
        r.get(kt, kiosk_path, "enter", str, kd.enter, _key_name),
        r.get(kt, kiosk_path, "backspace", str, kd.backspace, _key_name),
        r.get(kt, kiosk_path, "cancel", str, kd.cancel, _key_name),
        r.get(kt, kiosk_path, "appointment", str, kd.appointment, _key_name),
        r.get(kt, kiosk_path, "staff", str, kd.staff, _key_name),
        r.get(kt, kiosk_path, "green", str, kd.green, _key_name),
    )

    return Keys(caller, RatingKeys(tuple(levels)), kiosk)


def _texts(r: _Reader, top: dict[str, Any]) -> Texts:

    path: Path = ("texts",)
    t = r.table(top.get("texts", {}), path, set(Texts.__dataclass_fields__))
    d = Texts()
    values: dict[str, Any] = {}
    for name, allowed in TEXT_FIELDS.items():
        template = r.get(t, path, name, str, getattr(d, name))
        _check_template(r, (*path, name), template, allowed)
        values[name] = template
    reasons = r.get(t, path, "rating_reasons", list, list(d.rating_reasons))
    if not 1 <= len(reasons) <= 5 or not all(isinstance(x, str) and x for x in reasons):
        raise r.fail((*path, "rating_reasons"), "one to five non-empty strings")
    values["rating_reasons"] = tuple(reasons)
    values["rating_no_reason"] = r.get(t, path, "rating_no_reason", str, d.rating_no_reason)
    return Texts(**values)


def _site(r: _Reader, top: dict[str, Any], file: FsPath) -> Site:
    path: Path = ("site",)
    t = r.table(
        top.get("site", {}),
        path,
        {
            "id",
            "name",
            "timezone",
            "hours",
            "days",
            "secret_file",
            "day_end",
            "expire_after_minutes",
        },
    )
    site_id = r.get(
        t,
        path,
        "id",
        str,
        check=lambda v: (
            None
            if re.fullmatch(r"[a-z0-9_-]{1,32}", v)
            else "lower-case letters, digits, - and _ only (it is part of every topic)"
        ),
    )
    name = r.get(t, path, "name", str)
    tz_name = r.get(t, path, "timezone", str, "Asia/Shanghai")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise r.fail((*path, "timezone"), f"unknown time zone {tz_name!r}") from exc
    hours_raw = r.get(t, path, "hours", list, ["00:00-24:00"])
    hours = _parse_hours(hours_raw)
    if isinstance(hours, str):
        raise r.fail((*path, "hours"), hours)
    days_raw = r.get(t, path, "days", list, list(WEEKDAYS))
    bad = [d for d in days_raw if d not in WEEKDAYS]
    if bad:
        raise r.fail((*path, "days"), f"unknown day {bad[0]!r} (use {', '.join(WEEKDAYS)})")
    secret = r.get(t, path, "secret_file", str, "")
    secret_path = (file.parent / secret) if secret else None
    day_end = r.get(
        t,
        path,
        "day_end",
        str,
        "expire",
        lambda v: None if v in DAY_END_POLICIES else f"use {' or '.join(DAY_END_POLICIES)}",
    )
    expire_after = r.get(
        t,
        path,
        "expire_after_minutes",
        int,
        0,
        lambda v: None if 0 <= v <= 24 * 60 else "must be 0 to 1440 minutes",
    )
    return Site(
        site_id,
        name,
        tz,
        hours,
        frozenset(WEEKDAYS.index(d) for d in days_raw),
        secret_path,
        day_end,
        expire_after * 60,
    )


def _rules(r: _Reader, top: dict[str, Any]) -> QueueRules:
    path: Path = ("queue",)
    t = r.table(top.get("queue", {}), path, set(QueueRules.__dataclass_fields__))
    d = QueueRules()
    return QueueRules(
        interleave=r.get(t, path, "interleave", int, d.interleave, _positive),
        max_recalls=r.get(t, path, "max_recalls", int, d.max_recalls, _non_negative),
        reinstate_behind=r.get(t, path, "reinstate_behind", int, d.reinstate_behind, _non_negative),
        elderly_age=r.get(t, path, "elderly_age", int, d.elderly_age, _positive),
        number_width=r.get(
            t,
            path,
            "number_width",
            int,
            d.number_width,
            lambda v: None if 1 <= v <= 6 else "must be 1 to 6",
        ),
        rating_timeout_s=r.get(t, path, "rating_timeout_s", int, d.rating_timeout_s, _positive),
        require_login=r.get(t, path, "require_login", bool, d.require_login),
    )


def _quota(r: _Reader, value: Any, path: Path) -> Quota | None:
    if value is False:
        return None
    t = r.table(value, path, {"tickets", "hours", "minutes"})
    tickets = r.get(t, path, "tickets", int, 2, _positive)
    if "hours" in t and "minutes" in t:
        raise r.fail((*path, "minutes"), "give hours or minutes, not both")
    if "minutes" in t:
        seconds = r.get(t, path, "minutes", (int, float), check=_positive) * 60
    else:
        seconds = r.get(t, path, "hours", (int, float), 2, _positive) * 3600
    return Quota(tickets, int(seconds))


def _services(r: _Reader, top: dict[str, Any], rules: QueueRules) -> dict[str, Service]:
    raw = top.get("services")
    if not isinstance(raw, list) or not raw:
        raise r.fail(("services",), "at least one [[services]] table is required")
    services: dict[str, Service] = {}
    prefixes: dict[str, str] = {}
    allowed = {
        "id",
        "name",
        "prefix",
        "daily_cap",
        "quota",
        "priorities",
        "id_required",
        "max_wait_minutes",
        "expected_minutes",
        "department",
    }
    for i, item in enumerate(raw):
        path: Path = ("services", i)
        t = r.table(item, path, allowed)
        sid = r.get(
            t,
            path,
            "id",
            str,
            check=lambda v: (
                None
                if re.fullmatch(r"[a-z0-9_-]{1,32}", v)
                else "lower-case letters, digits, - and _ only"
            ),
        )
        if sid in services:
            raise r.fail((*path, "id"), f"duplicate service id {sid!r}")
        prefix = r.get(
            t,
            path,
            "prefix",
            str,
            check=lambda v: (
                None if re.fullmatch(r"[A-Z]", v) else f"must be one capital letter A-Z, got {v!r}"
            ),
        )
        if prefix in prefixes:
            raise r.fail(
                (*path, "prefix"), f"prefix {prefix!r} already used by {prefixes[prefix]!r}"
            )
        prefixes[prefix] = sid
        priorities = r.get(t, path, "priorities", list, list(PRIORITY_KINDS))
        for kind in priorities:
            if kind not in PRIORITY_KINDS:
                raise r.fail(
                    (*path, "priorities"),
                    f"unknown priority {kind!r} (use {', '.join(PRIORITY_KINDS)})",
                )
        quota_raw = t.get("quota", {"tickets": 2, "hours": 2})
        if not isinstance(quota_raw, dict | bool) or quota_raw is True:
            raise r.fail(
                (*path, "quota"), "must be a table like { tickets = 2, hours = 2 } or false"
            )
        cap = r.get(t, path, "daily_cap", int, 0, _non_negative)
        services[sid] = Service(
            id=sid,
            name=r.get(t, path, "name", str),
            prefix=prefix,
            daily_cap=cap or None,
            quota=_quota(r, quota_raw, (*path, "quota")),
            priorities=frozenset(priorities),
            id_required=r.get(t, path, "id_required", bool, True),
            max_wait_s=int(r.get(t, path, "max_wait_minutes", (int, float), 60, _positive) * 60),
            expected_service_s=int(
                r.get(t, path, "expected_minutes", (int, float), 8, _positive) * 60
            ),
            department=r.get(t, path, "department", str, ""),
        )
    return services


def _windows(r: _Reader, top: dict[str, Any], services: dict[str, Service]) -> dict[int, Window]:
    raw = top.get("windows", [])
    if not isinstance(raw, list):
        raise r.fail(("windows",), "must be an array of tables [[windows]]")
    windows: dict[int, Window] = {}
    for i, item in enumerate(raw):
        path: Path = ("windows", i)
        t = r.table(item, path, {"number", "services", "name"})
        number = r.get(t, path, "number", int, check=_positive)
        if number in windows:
            raise r.fail((*path, "number"), f"duplicate window number {number}")
        served = r.get(t, path, "services", (list, dict))
        weights = {s: 1.0 for s in served} if isinstance(served, list) else dict(served)
        if not weights:
            raise r.fail((*path, "services"), "a window must serve at least one service")
        for sid, weight in weights.items():
            if sid not in services:
                raise r.fail((*path, "services"), f"unknown service {sid!r}")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
                raise r.fail(
                    (*path, "services", sid), f"weight must be a positive number, got {weight!r}"
                )
        windows[number] = Window(
            number, {s: float(w) for s, w in weights.items()}, r.get(t, path, "name", str, "")
        )
    return windows


def _staff(r: _Reader, top: dict[str, Any], services: dict[str, Service]) -> dict[str, Staff]:
    raw = top.get("staff", [])
    staff: dict[str, Staff] = {}
    cards: dict[str, str] = {}
    for i, item in enumerate(raw if isinstance(raw, list) else [raw]):
        path: Path = ("staff", i)
        t = r.table(
            item,
            path,
            {"id", "name", "photo", "pledge", "services", "override", "cards", "pin_hash"},
        )
        sid = r.get(
            t,
            path,
            "id",
            str,
            check=lambda v: (
                None if re.fullmatch(r"[A-Za-z0-9]{1,16}", v) else "letters and digits only"
            ),
        )
        if sid in staff:
            raise r.fail((*path, "id"), f"duplicate staff id {sid!r}")
        own = r.get(t, path, "services", list, [])
        for s in own:
            if s not in services:
                raise r.fail((*path, "services"), f"unknown service {s!r}")
        uids = [str(c).upper() for c in r.get(t, path, "cards", list, [])]
        for uid in uids:
            if not re.fullmatch(r"[0-9A-F]{8,20}", uid):
                raise r.fail((*path, "cards"), f"card UID must be hex, got {uid!r}")
            if uid in cards:
                raise r.fail((*path, "cards"), f"card {uid} already belongs to {cards[uid]}")
            cards[uid] = sid
        staff[sid] = Staff(
            sid,
            r.get(t, path, "name", str),
            r.get(t, path, "photo", str, ""),
            r.get(t, path, "pledge", str, ""),
            tuple(own),
            r.get(t, path, "override", bool, False),
            tuple(uids),
            r.get(t, path, "pin_hash", str, "", _pin_hash),
        )
    return staff


def _pin_hash(value: str) -> str | None:
    from quhao.staffauth import PIN_HASH_PATTERN

    if PIN_HASH_PATTERN.fullmatch(value):
        return None
    return "not a PIN hash (make one with `quhao staff pin`; never write a PIN here)"


def _card_absent_ms(value: int) -> str | None:
    return None if 0 <= value <= 10_000 else f"must be 0 to 10000 milliseconds, got {value}"


def _device_name(r: _Reader, t: dict[str, Any], path: Path, taken: set[str]) -> str:
    name = r.get(
        t,
        path,
        "name",
        str,
        check=lambda v: (
            None
            if DEVICE_NAME.fullmatch(v)
            else "letters, digits, - and _ only (it is an MQTT user name and topic level)"
        ),
    )
    if name in taken or name == "hall":
        raise r.fail((*path, "name"), f"device name {name!r} is already used")
    taken.add(name)
    return name


def _kiosks(r: _Reader, top: dict[str, Any], services: dict[str, Service]) -> dict[str, Kiosk]:
    kiosks: dict[str, Kiosk] = {}
    for i, item in enumerate(top.get("kiosks", [])):
        path: Path = ("kiosks", i)
        t = r.table(
            item, path, {"name", "services", "readers", "keypad", "printer", "card_absent_ms"}
        )
        name = _device_name(r, t, path, set(kiosks))
        offered = r.get(t, path, "services", list, list(services))
        for s in offered:
            if s not in services:
                raise r.fail((*path, "services"), f"unknown service {s!r}")
        if len(offered) > 12:
            raise r.fail((*path, "services"), "at most 12 services (keys F1-F12)")
        kiosks[name] = Kiosk(
            name,
            tuple(offered),
            tuple(r.get(t, path, "readers", list, [])),
            r.get(t, path, "keypad", str, ""),
            r.get(t, path, "printer", str, ""),
            r.get(t, path, "card_absent_ms", int, 500, _card_absent_ms),
        )
    return kiosks


def _counters(
    r: _Reader, top: dict[str, Any], windows: dict[int, Window], kiosks: dict[str, Kiosk]
) -> dict[str, Counter]:
    counters: dict[str, Counter] = {}
    for i, item in enumerate(top.get("counters", [])):
        path: Path = ("counters", i)
        t = r.table(
            item,
            path,
            {"name", "window", "keypad", "display", "rating", "reader", "card_absent_ms"},
        )
        name = _device_name(r, t, path, set(counters) | set(kiosks))
        window = r.get(t, path, "window", int)
        if window not in windows:
            raise r.fail((*path, "window"), f"no [[windows]] entry with number {window}")
        counters[name] = Counter(
            name,
            window,
            r.get(t, path, "keypad", str, ""),
            r.get(t, path, "display", str, ""),
            r.get(t, path, "rating", str, ""),
            r.get(t, path, "reader", str, ""),
            r.get(t, path, "card_absent_ms", int, 500, _card_absent_ms),
        )
    return counters

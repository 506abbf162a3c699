"""The site file's tables as frozen pydantic models: keys, types, defaults, constraints.

Each model accepts exactly the keys of its table (`extra="forbid"`); scalars are strict
(a string is never taken for a number, nor a boolean for an integer). Rules between
tables (a window's services exist, device names are unique, …) are validators of
`SiteConfig`; each reports every breach it finds to the problem list in the validation
context, so one load names every problem at once.
"""

from __future__ import annotations

import hashlib
import re
import string
from datetime import time as dtime
from functools import cached_property, partial
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from quhao.config.errors import ConfigError, Problem, dotted
from quhao.config.loops import Appointments, Cases, Scoring
from quhao.config.screens import Screens, check_screens
from quhao.config.voice import Voice
from quhao.staffauth import PIN_HASH_PATTERN
from quhao.tomlpos import Path, line_of

Priority = Literal["elderly", "appointment", "green"]
PRIORITY_KINDS: tuple[Priority, ...] = get_args(Priority)
DayEnd = Literal["expire", "carry_over"]
DAY_END_POLICIES: tuple[DayEnd, ...] = get_args(DayEnd)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# SHA-256 of secrets published with this repository (examples/site.secret): person keys
# made with them are the same at every hall that copied one, and reversible by anybody
# who enumerates ID numbers. Only a simulated hall may use them.
PUBLISHED_SECRETS = frozenset({"104bc7479f0183355e29f2861e01e8a96cefc3ae913a5b62f4e219bce6cb53b6"})
SECRET_MIN_BYTES = 16

# Placeholders each text may use.
TEXT_FIELDS: dict[str, set[str]] = {
    "display_call": {"ticket", "window", "service"},
    "display_paused": {"window", "staff", "staff_name"},
    "display_idle": {"window", "staff", "staff_name"},
    "display_closed": {"window"},
    "quota_slip": {"service", "limit", "hours"},
    "ticket_notice": set(),
}
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

# ---- value types ----------------------------------------------------------------

PositiveInt = Annotated[StrictInt, Field(gt=0)]
PositiveNumber = Annotated[float, Strict(), Field(gt=0)]  # an int or a float, never a boolean
Count = Annotated[StrictInt, Field(ge=0)]
CardAbsentMs = Annotated[
    StrictInt, Field(ge=0, le=10_000, description="must be 0 to 10000 milliseconds")
]
DeviceName = Annotated[
    StrictStr,
    Field(
        pattern=DEVICE_NAME,
        description="letters, digits, - and _ only (it is an MQTT user name and topic level)",
    ),
]


def _linux_key_name(value: str) -> str:
    from evdev import ecodes

    if value.startswith("KEY_") and value in ecodes.ecodes:
        return value
    raise ValueError(f"unknown key name {value!r} (use Linux names like KEY_KPENTER)")


KeyName = Annotated[StrictStr, AfterValidator(_linux_key_name)]


def _check_template(template: str, allowed: set[str], shown: set[str] | None = None) -> str:
    """A format template may use only the allowed placeholders (the error lists `shown`)."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from exc
    unknown = used - allowed
    if unknown:
        names = ", ".join("{" + a + "}" for a in sorted(shown or allowed)) or "none"
        raise ValueError(
            f"unknown placeholder {{{sorted(unknown)[0]}}} in {template!r} (allowed: {names})"
        )
    return template


def _template(name: str) -> AfterValidator:
    return AfterValidator(partial(_check_template, allowed=TEXT_FIELDS[name]))


def _ticket_lines(lines: tuple[str, ...]) -> tuple[str, ...]:
    """Every line's unknown placeholders, in one message."""
    problems = []
    for line in lines:
        try:
            _check_template(line, TICKET_FIELDS | set(TICKET_STYLES) | {"qr"}, TICKET_FIELDS)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return lines


TicketLines = Annotated[tuple[StrictStr, ...], AfterValidator(_ticket_lines)]


class _Table(BaseModel):
    """One table of the site file: its keys and nothing else, read-only once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _set_by_the_program(value: object) -> object:
    """A field the program sets (after loading) is no key of the file."""
    raise PydanticCustomError("extra_forbidden", "Extra inputs are not permitted")


# ---- [site] -----------------------------------------------------------------------


def _opening_hours(value: Any) -> Any:
    """["08:30-12:00", …] → ((start, end), …) sorted; end None: until midnight (24:00)."""
    if not isinstance(value, list):
        return value  # pydantic says what it must be
    spans: list[tuple[dtime, dtime | None]] = []
    for span in value:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", str(span))
        if not match:
            raise ValueError(f'each span must look like "08:30-12:00", got {span!r}')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2, m2) > (24, 0):
            raise ValueError(f"not a time of day: {span!r}")
        start = dtime(h1, m1)
        end = None if h2 == 24 else dtime(h2, m2)  # 24:00 is the end of the day itself
        if end is not None and end <= start:
            raise ValueError(f"span ends before it starts: {span!r}")
        spans.append((start, end))
    return tuple(sorted(spans, key=lambda span: span[0]))


def _weekday_numbers(value: Any) -> Any:
    """["mon", "tue", …] → {0, 1, …} (0 = Monday)."""
    if not isinstance(value, list):
        return value
    for day in value:
        if day not in WEEKDAYS:
            raise ValueError(f"unknown day {day!r} (use {', '.join(WEEKDAYS)})")
    return frozenset(WEEKDAYS.index(day) for day in value)


class Site(_Table):
    id: Annotated[
        StrictStr,
        Field(
            pattern=r"^[a-z0-9_-]{1,32}$",
            description="lower-case letters, digits, - and _ only (it is part of every topic)",
        ),
    ]
    name: StrictStr
    timezone: ZoneInfo = ZoneInfo("Asia/Shanghai")
    hours: Annotated[tuple[tuple[dtime, dtime | None], ...], BeforeValidator(_opening_hours)] = (
        (dtime(0, 0), None),
    )
    days: Annotated[frozenset[int], BeforeValidator(_weekday_numbers)] = frozenset(range(7))
    # Relative to the site file. Kept out of the TOML on purpose: it keys person pseudonyms.
    secret_file: FsPath | None = None
    # What happens to tickets still waiting when the day ends: "expire" (closed as
    # expired at the end of opening hours, so every day's record closes) or "carry_over"
    # (a 24-hour or late hall: they keep their place, issue time and priority).
    day_end: DayEnd = "expire"
    # "expire" happens this long after the last opening span ends (hours are when tickets
    # are issued; a hall may keep serving the ones issued a while after that).
    expire_after_minutes: Annotated[
        StrictInt, Field(ge=0, le=24 * 60, description="must be 0 to 1440 minutes")
    ] = 0
    # A simulated hall (demo, tests, `--allow-example-secret`); never from the file.
    allow_example_secret: Annotated[bool, BeforeValidator(_set_by_the_program)] = Field(
        False, exclude=True
    )

    @field_validator("secret_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("secret_file")
    @classmethod
    def _beside_the_site_file(cls, value: FsPath | None, info: ValidationInfo) -> FsPath | None:
        file = (info.context or {}).get("file")
        return FsPath(file).parent / value if value is not None and file else value

    @property
    def expire_after_s(self) -> int:
        return self.expire_after_minutes * 60


# ---- [queue] ----------------------------------------------------------------------


class QueueRules(_Table):
    interleave: PositiveInt = 3  # at most this many priority calls in a row while others wait
    max_recalls: Count = 3  # one more recall turns into a skip
    reinstate_behind: Count = 3  # a reinstated no-show goes behind this many waiting tickets
    elderly_age: PositiveInt = 60
    number_width: Annotated[StrictInt, Field(ge=1, le=6, description="must be 1 to 6")] = 3
    rating_timeout_s: PositiveInt = 30
    require_login: StrictBool = False


# ---- [[services]] -----------------------------------------------------------------


class Quota(_Table):
    """At most `tickets` tickets per person within a sliding window of `hours` or `minutes`."""

    tickets: PositiveInt = 2
    hours: PositiveNumber = 2
    minutes: PositiveNumber | None = None

    @model_validator(mode="after")
    def _one_window(self) -> Quota:
        if "hours" in self.model_fields_set and self.minutes is not None:
            raise ValueError("give hours or minutes, not both")
        return self

    @property
    def seconds(self) -> int:
        return int(self.minutes * 60 if self.minutes is not None else self.hours * 3600)


def _quota_or_false(value: Any) -> Any:
    if value is False:
        return None
    if isinstance(value, dict):
        return value
    raise ValueError("must be a table like { tickets = 2, hours = 2 } or false")


def _zero_is_none(value: int | None) -> int | None:
    return value or None


class Service(_Table):
    id: Annotated[
        StrictStr,
        Field(
            pattern=r"^[a-z0-9_-]{1,32}$", description="lower-case letters, digits, - and _ only"
        ),
    ]
    name: StrictStr
    prefix: Annotated[
        StrictStr, Field(pattern=r"^[A-Z]$", description="must be one capital letter A-Z")
    ]
    daily_cap: Annotated[StrictInt | None, Field(ge=0), AfterValidator(_zero_is_none)] = None
    quota: Annotated[Quota | None, BeforeValidator(_quota_or_false)] = Quota()
    priorities: frozenset[Priority] = frozenset(PRIORITY_KINDS)
    id_required: StrictBool = True
    max_wait_minutes: PositiveNumber = 60
    expected_minutes: PositiveNumber = 8
    department: StrictStr = ""

    @property
    def max_wait_s(self) -> int:
        return int(self.max_wait_minutes * 60)

    @property
    def expected_service_s(self) -> int:
        return int(self.expected_minutes * 60)


# ---- [[windows]], [[staff]], [[kiosks]], [[counters]] --------------------------------


def _equal_weights(value: Any) -> Any:
    """`services = ["tax", "business"]` is `{ tax = 1, business = 1 }`."""
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return dict.fromkeys(value, 1.0)
    if isinstance(value, dict):
        return value
    raise ValueError(f"must be an array of service ids or a table of weights, got {value!r}")


class Window(_Table):
    number: PositiveInt
    services: Annotated[
        dict[str, PositiveNumber],  # service id -> weight (一窗受理)
        BeforeValidator(_equal_weights),
        Field(min_length=1, description="a window must serve at least one service"),
    ]
    name: StrictStr = ""


def _upper(value: Any) -> Any:
    return str(value).upper()


CardUid = Annotated[
    str,
    BeforeValidator(_upper),
    Field(pattern=r"^[0-9A-F]{8,20}$", description="card UID must be hex (8 to 20 digits)"),
]


class Staff(_Table):
    id: Annotated[
        StrictStr, Field(pattern=r"^[A-Za-z0-9]{1,16}$", description="letters and digits only")
    ]
    name: StrictStr
    photo: StrictStr = ""
    pledge: StrictStr = ""
    contact: StrictStr = ""  # 五公开: how to reach the clerk (a phone extension)
    party_member: StrictBool = False  # 共产党员岗: the window screen shows the badge
    services: tuple[StrictStr, ...] = ()
    can_override: StrictBool = Field(False, alias="override")
    cards: tuple[CardUid, ...] = ()  # staff card UIDs, upper-case hex
    # PBKDF2 hash of the staff PIN (`quhao staff pin`); empty: card only
    pin_hash: Annotated[
        StrictStr,
        Field(
            pattern=PIN_HASH_PATTERN.pattern,
            description="not a PIN hash (make one with `quhao staff pin`; never write a PIN here)",
            json_schema_extra={"echo": False},  # it might be a PIN
        ),
    ] = ""


class Kiosk(_Table):
    name: DeviceName
    services: Annotated[  # F1, F2, … in this order; default: every service
        tuple[StrictStr, ...], Field(max_length=12, description="at most 12 services (keys F1-F12)")
    ] = ()
    readers: tuple[StrictStr, ...] = ()
    keypad: StrictStr = ""
    printer: StrictStr = ""
    card_absent_ms: CardAbsentMs = 500  # a card counts as removed only after this long unseen


class Counter(_Table):
    name: DeviceName
    window: StrictInt
    keypad: StrictStr = ""
    display: StrictStr = ""
    rating: StrictStr = ""
    reader: StrictStr = ""
    card_absent_ms: CardAbsentMs = 500


# ---- [keys] -------------------------------------------------------------------------


class CallerKeys(_Table):
    call: KeyName = "KEY_KPENTER"  # call next (finishes the current ticket); ends digit entry
    recall: KeyName = "KEY_KPPLUS"
    skip: KeyName = "KEY_KPMINUS"
    finish: KeyName = "KEY_KPDOT"
    pause: KeyName = "KEY_KPASTERISK"  # toggles pause / resume
    transfer: KeyName = "KEY_KPSLASH"  # then the service number, then call key
    logout: KeyName = "KEY_NUMLOCK"

    @model_validator(mode="after")
    def _one_key_one_action(self) -> CallerKeys:
        if len(set(vars(self).values())) != len(vars(self)):
            raise ValueError("two caller actions share one key")
        return self


class RatingKeys(_Table):
    # 非常满意, 满意, 基本满意, 不满意, 非常不满意: levels 5 … 1
    levels: Annotated[
        tuple[KeyName, ...],
        Field(
            min_length=5,
            max_length=5,
            description="five key names: 非常满意, 满意, 基本满意, 不满意, 非常不满意",
        ),
    ] = ("KEY_1", "KEY_2", "KEY_3", "KEY_4", "KEY_5")


class KioskKeys(_Table):
    services: tuple[KeyName, ...] = tuple(f"KEY_F{i}" for i in range(1, 13))
    enter: KeyName = "KEY_ENTER"
    backspace: KeyName = "KEY_BACKSPACE"
    cancel: KeyName = "KEY_ESC"
    appointment: KeyName = "KEY_A"  # pressed before the card: the appointment lane
    staff: KeyName = "KEY_S"  # then staff number, Enter, PIN, Enter: one override ticket
    green: KeyName = "KEY_G"  # after a staff authorisation: the green channel


class Keys(_Table):
    caller: CallerKeys = CallerKeys()
    rating: RatingKeys = RatingKeys()
    kiosk: KioskKeys = KioskKeys()


# ---- [texts], [ticket] ----------------------------------------------------------------


class Texts(_Table):
    """What citizens read. Chinese by default; every one can be changed in [texts]."""

    display_call: Annotated[StrictStr, _template("display_call")] = (
        "请 {ticket} 号到 {window} 号窗口"
    )
    display_paused: Annotated[StrictStr, _template("display_paused")] = "暂停服务"
    display_idle: Annotated[StrictStr, _template("display_idle")] = (
        "{window}号窗口 {staff_name} {staff}"
    )
    display_closed: Annotated[StrictStr, _template("display_closed")] = "{window}号窗口"
    quota_slip: Annotated[StrictStr, _template("quota_slip")] = "额满再取须咨询工作人员"
    ticket_notice: Annotated[StrictStr, _template("ticket_notice")] = "过号无效，请留意叫号"
    rating_reasons: Annotated[
        tuple[Annotated[StrictStr, Field(min_length=1)], ...],
        Field(min_length=1, max_length=5, description="one to five non-empty strings"),
    ] = ("等候时间长", "服务态度差", "业务不熟练", "一次告知不清", "其他")
    rating_no_reason: StrictStr = "未说明原因"


class TicketTemplate(_Table):
    """The ticket, line by line. A line may start with style marks ({center}, {left},
    {right}, {bold}, {large} 2x, {big} 3x); a line that is just {qr} prints the
    ticket's QR code. Placeholders: see TICKET_FIELDS."""

    lines: TicketLines = (
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
    slip_lines: TicketLines = (
        "{center}{bold}{hall_name}",
        "{center}{large}{service_name}",
        "{center}{large}{slip}",
        "{center}{date} {time}",
        "{center}证件号 {masked_id}",
    )


# ---- [limits], [privacy], [devices] ----------------------------------------------------


class Rate(_Table):
    """A token bucket: `per_s` requests a second on average, `burst` at once."""

    per_s: PositiveNumber
    burst: PositiveInt


class Limits(_Table):
    """What one device may ask of the hall (real seconds), and when the disk is low.

    Defaults a real device never meets: a kiosk issues a ticket in no less than a few
    seconds of a citizen's time; a clerk presses a key or two a second at most."""

    kiosk: Rate = Rate(per_s=1.0, burst=5)
    counter: Rate = Rate(per_s=5.0, burst=20)
    disk_low_mb: Count = 200  # device/hall/status says disk_low below this much free space

    @field_validator("kiosk", "counter", mode="before")
    @classmethod
    def _rate_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """A rate that gives only `per_s` or `burst` keeps the other of its default."""
        if not isinstance(value, dict) or info.field_name is None:
            return value
        default = cls.model_fields[info.field_name].default
        return {**default.model_dump(), **value}


class Privacy(_Table):
    # A person key is erased from the hall's store at the end of the Nth day after the
    # ticket's day (1: the end of the next day) — no quota window can need it later.
    person_key_days: PositiveInt = 1


class Devices(_Table):
    """How kiosks and counters talk to the hall."""

    hall_timeout_ms: Annotated[
        StrictInt, Field(ge=50, le=60_000, description="must be 50 to 60000 milliseconds")
    ] = 2000  # how long a device waits for each answer from the hall
    hall_attempts: Annotated[StrictInt, Field(ge=1, le=10, description="must be 1 to 10")] = (
        3  # attempts (same rid) before the device says the hall is unreachable
    )
    lease_numbers: Annotated[StrictInt, Field(ge=0, le=1000, description="must be 0 to 1000")] = (
        10  # numbers per lease block a kiosk may print while the hall is unreachable; 0: none
    )

    @property
    def hall_timeout_s(self) -> float:
        return self.hall_timeout_ms / 1000


# ---- the whole file ----------------------------------------------------------------------


def _one_table_is_a_list(value: Any) -> Any:
    """A lone `[staff]` table is one staff member."""
    return [value] if isinstance(value, dict) else value


# The hall office (`quhao cases`, `quhao appointments`): asks the hall as this device.
OFFICE_DEVICE = "office"


class SiteConfig(_Table):
    """A hall's configuration. Tables that are arrays in the file are also here by key:
    `services` by id, `windows` by number, `staff` by id, `kiosks` and `counters` by name."""

    site: Site
    rules: QueueRules = Field(QueueRules(), alias="queue")
    service_list: tuple[Service, ...] = Field(
        alias="services", min_length=1, description="at least one [[services]] table is required"
    )
    window_list: tuple[Window, ...] = Field((), alias="windows")
    staff_list: Annotated[tuple[Staff, ...], BeforeValidator(_one_table_is_a_list)] = Field(
        (), alias="staff"
    )
    kiosk_list: tuple[Kiosk, ...] = Field((), alias="kiosks")
    counter_list: tuple[Counter, ...] = Field((), alias="counters")
    keys: Keys = Keys()
    texts: Texts = Texts()
    ticket: TicketTemplate = TicketTemplate()
    limits: Limits = Limits()
    privacy: Privacy = Field(Privacy(), validate_default=True)  # checked against the quotas
    devices: Devices = Devices()
    screens: Screens = Screens()
    voice: Voice = Voice()  # voice calling (语音叫号): quhao/config/voice.py
    # appointment check-in, bad-rating cases, the score: quhao/config/loops.py
    appointments: Appointments = Appointments()
    cases: Cases = Cases()
    scoring: Scoring = Scoring()

    _source: FsPath = PrivateAttr(FsPath("site.toml"))
    _lines: dict[Path, int] = PrivateAttr(default_factory=dict)  # key path -> line in the file

    # ---- by key --------------------------------------------------------------------

    @cached_property
    def services(self) -> dict[str, Service]:
        return {s.id: s for s in self.service_list}

    @cached_property
    def windows(self) -> dict[int, Window]:
        return {w.number: w for w in self.window_list}

    @cached_property
    def staff(self) -> dict[str, Staff]:
        return {s.id: s for s in self.staff_list}

    @cached_property
    def kiosks(self) -> dict[str, Kiosk]:
        return {k.name: k for k in self.kiosk_list}

    @cached_property
    def counters(self) -> dict[str, Counter]:
        return {c.name: c for c in self.counter_list}

    @property
    def source(self) -> FsPath:
        """The file this configuration was read from."""
        return self._source

    def device_role(self, device: str) -> str | None:
        if device in self.kiosks:
            return "kiosk"
        if device in self.counters:
            return "counter"
        if self.rater_window(device) is not None:
            return "rater"
        if device == OFFICE_DEVICE:
            return "office"
        return None

    def rater_window(self, device: str) -> int | None:
        """`rater-W5`: the touch screen at window 5, which may only rate (its window's)."""
        match = re.fullmatch(r"rater-W([1-9][0-9]{0,5})", device)
        number = int(match[1]) if match else None
        return number if number in self.windows else None

    def staff_by_card(self, uid: str) -> Staff | None:
        uid = uid.upper()
        return next((s for s in self.staff.values() if uid in s.cards), None)

    def problem(self, path: Path, message: str) -> Problem:
        """A problem with the key at path, on the line where the file wrote it."""
        return Problem(str(self._source), line_of(self._lines, path), dotted(path), message)

    def read_secret(self) -> bytes:
        """The site secret keying person pseudonyms (HMAC). Kept out of the TOML on purpose."""
        secret = secret_or_problem(self.site)
        if isinstance(secret, str):
            raise ConfigError([self.problem(("site", "secret_file"), secret)])
        return secret

    # ---- rules between tables ------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _kiosks_offer_every_service(cls, data: Any) -> Any:
        """A kiosk without `services` offers them all, in the file's order."""
        if not isinstance(data, dict):
            return data
        services, kiosks = data.get("services"), data.get("kiosks")
        if not isinstance(services, list) or not isinstance(kiosks, list):
            return data
        ids = [s["id"] for s in services if isinstance(s, dict) and isinstance(s.get("id"), str)]
        return {
            **data,
            "kiosks": [{"services": ids, **k} if isinstance(k, dict) else k for k in kiosks],
        }

    @field_validator("service_list")
    @classmethod
    def _ids_and_prefixes_unique(
        cls, services: tuple[Service, ...], info: ValidationInfo
    ) -> tuple[Service, ...]:
        ids: set[str] = set()
        prefixes: dict[str, str] = {}
        for i, service in enumerate(services):
            if service.id in ids:
                _report(info, ("services", i, "id"), f"duplicate service id {service.id!r}")
            ids.add(service.id)
            if service.prefix in prefixes:
                _report(
                    info,
                    ("services", i, "prefix"),
                    f"prefix {service.prefix!r} already used by {prefixes[service.prefix]!r}",
                )
            prefixes.setdefault(service.prefix, service.id)
        return services

    @field_validator("window_list")
    @classmethod
    def _windows_unique_and_served(
        cls, windows: tuple[Window, ...], info: ValidationInfo
    ) -> tuple[Window, ...]:
        numbers: set[int] = set()
        for i, window in enumerate(windows):
            if window.number in numbers:
                _report(info, ("windows", i, "number"), f"duplicate window number {window.number}")
            numbers.add(window.number)
            _known_services(info, window.services, ("windows", i, "services"))
        return windows

    @field_validator("staff_list")
    @classmethod
    def _staff_unique(cls, staff: tuple[Staff, ...], info: ValidationInfo) -> tuple[Staff, ...]:
        ids: set[str] = set()
        owners: dict[str, str] = {}
        for i, member in enumerate(staff):
            if member.id in ids:
                _report(info, ("staff", i, "id"), f"duplicate staff id {member.id!r}")
            ids.add(member.id)
            _known_services(info, member.services, ("staff", i, "services"))
            for uid in member.cards:
                if uid in owners:
                    _report(
                        info, ("staff", i, "cards"), f"card {uid} already belongs to {owners[uid]}"
                    )
                owners.setdefault(uid, member.id)
        return staff

    @field_validator("kiosk_list")
    @classmethod
    def _kiosks_named_and_offering(
        cls, kiosks: tuple[Kiosk, ...], info: ValidationInfo
    ) -> tuple[Kiosk, ...]:
        taken: set[str] = set()
        for i, kiosk in enumerate(kiosks):
            _device_name(info, kiosk.name, taken, ("kiosks", i, "name"))
            _known_services(info, kiosk.services, ("kiosks", i, "services"))
        return kiosks

    @field_validator("counter_list")
    @classmethod
    def _counters_named_at_windows(
        cls, counters: tuple[Counter, ...], info: ValidationInfo
    ) -> tuple[Counter, ...]:
        taken = {k.name for k in info.data.get("kiosk_list", ())}
        windows = info.data.get("window_list")
        for i, counter in enumerate(counters):
            _device_name(info, counter.name, taken, ("counters", i, "name"))
            if windows is not None and counter.window not in {w.number for w in windows}:
                _report(
                    info,
                    ("counters", i, "window"),
                    f"no [[windows]] entry with number {counter.window}",
                )
        return counters

    @field_validator("privacy")
    @classmethod
    def _keys_outlive_quotas(cls, privacy: Privacy, info: ValidationInfo) -> Privacy:
        services = info.data.get("service_list", ())
        longest = max((s.quota.seconds for s in services if s.quota), default=0)
        if privacy.person_key_days * 86400 < longest:
            _report(
                info,
                ("privacy", "person_key_days"),
                f"keys must outlive the longest quota window ({longest // 3600} hours)",
            )
        return privacy

    @field_validator("voice")
    @classmethod
    def _voice_services_known(cls, voice: Voice, info: ValidationInfo) -> Voice:
        _known_services(info, voice.services, ("voice", "services"))
        return voice

    @field_validator("screens")
    @classmethod
    def _boards_known(cls, screens: Screens, info: ValidationInfo) -> Screens:
        for path, message in check_screens(screens, info.data):
            _report(info, path, message)
        return screens


def _report(info: ValidationInfo, path: Path, message: str) -> None:
    """A rule between tables found a problem: note it and go on looking for more."""
    found = (info.context or {}).get("problems")
    if found is None:  # validated outside `loads`: the first problem is all we can say
        raise PydanticCustomError(
            "site_rule", "{key}: {message}", {"key": dotted(path), "message": message}
        )
    found.append((path, message))


def _known_services(info: ValidationInfo, used: Any, path: Path) -> None:
    services = info.data.get("service_list")
    if services is None:
        return  # the services themselves are wrong: that is the problem to report
    known = {s.id for s in services}
    for sid in used:
        if sid not in known:
            _report(info, path, f"unknown service {sid!r}")


def _device_name(info: ValidationInfo, name: str, taken: set[str], path: Path) -> None:
    if name in taken or name == "hall":
        _report(info, path, f"device name {name!r} is already used")
    taken.add(name)


# ---- the secret --------------------------------------------------------------------------


def is_published_secret(secret: bytes) -> bool:
    return hashlib.sha256(secret.strip()).hexdigest() in PUBLISHED_SECRETS


def secret_or_problem(site: Site) -> bytes | str:
    """The site secret as the daemons read it, or what is wrong with it."""
    if site.secret_file is None:
        return "not set"
    try:
        secret = site.secret_file.read_bytes().strip()
    except OSError as exc:
        return f"cannot read: {exc}"
    if len(secret) < SECRET_MIN_BYTES:
        return f"secret shorter than {SECRET_MIN_BYTES} bytes"
    if is_published_secret(secret) and not site.allow_example_secret:
        return (
            f"{site.secret_file} is the published example secret: person keys made "
            "with it are the same at every hall that copied it and can be reversed by "
            "enumerating ID numbers; make this hall's own with `quhao secret gen --out "
            "FILE` (a simulated hall may pass --allow-example-secret)"
        )
    return secret

"""What every wire model shares: strict, closed, immutable JSON objects; the field types
with their limits; and how a refused validation becomes one clear `bad_request` message.

Strict: a JSON string is never taken for a number nor a number for a string, `true` is
not 1, 40.0 is not an age. Closed (`extra="forbid"`): a key the contract does not name is
refused, never silently dropped — a device and the hall that disagree find out at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

MAX_RID = 128  # characters of a request id
MAX_TEXT = 64  # ids, numbers, services, PINs, proofs: nothing a device sends is longer
MAX_REASON = 200  # a rating reason typed on a touch screen
MAX_AGE = 130  # an age read from a birth date; anything else is not a person's
PERSON_KEY_PATTERN = r"^[0-9a-f]{16,128}$"  # an HMAC digest in lower-case hex


class Wire(BaseModel):
    """One JSON object of the wire contract."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


Rid = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_RID,
        description="names the logical request: the same rid is answered the same",
    ),
]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
TicketRef = Annotated[
    str,
    Field(max_length=MAX_TEXT, description="a ticket id, or today's number"),
]
ServiceId = Annotated[str, Field(max_length=MAX_TEXT, description="a service id of the site")]
StaffId = Annotated[str, Field(max_length=MAX_TEXT, description="a staff id of the site")]
PersonKey = Annotated[
    str,
    Field(
        max_length=128,
        pattern=PERSON_KEY_PATTERN,
        description="HMAC-SHA256(site secret, ID number), lower-case hex",
    ),
]
Age = Annotated[
    int,
    Field(ge=0, le=MAX_AGE, description="whole years, from the birth date"),
]
Reason = Annotated[str, Field(max_length=MAX_REASON)]
Seconds = Annotated[float, Field(description="Unix seconds, hall clock")]
DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
Day = Annotated[
    str, Field(max_length=MAX_TEXT, pattern=DAY_PATTERN, description="a local date, 2026-11-23")
]

Priority = Literal["elderly", "appointment", "green"]
TicketStatus = Literal["waiting", "called", "finished", "skipped", "voided", "expired"]
TerminalStatus = Literal["serving", "idle", "paused", "closed"]


class BadRequest(ValueError):
    """A payload that does not fit its model: the hall answers `bad_request` with this."""

    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def encode(model: BaseModel) -> dict[str, Any]:
    """A model as the JSON object a sender publishes: the keys it was given (or decoded
    with), JSON names ("from"), JSON values. A key left out stays out: for `call`, no
    `expect` differs from `"expect": null`."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def refusal(error: ValidationError) -> BadRequest:
    """The first problem of a failed validation, worded for the asker's log."""
    return BadRequest(problem(error.errors(include_url=False)[0]))


_KINDS = {
    "string_type": "str",
    "int_type": "int",
    "float_type": "float",
    "bool_type": "bool",
    "model_type": "dict",
    "model_attributes_type": "dict",
    "dict_type": "dict",
    "list_type": "list",
}
_PATTERNS = {
    PERSON_KEY_PATTERN: "16 to 128 lower-case hex digits",
    DAY_PATTERN: "a date YYYY-MM-DD",
}


def problem(error: ErrorDetails) -> str:
    """One validation error as a message naming the field (`person.age`), in the words
    the hall has always used: `missing field 'service'`, `field 'service' must be str`."""
    name = ".".join(str(part) for part in error["loc"])
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return f"missing field {name!r}"
    if kind == "missing_field":  # a field only the model as a whole knows is missing
        return f"missing field {'.'.join(p for p in (name, str(ctx['field'])) if p)!r}"
    if kind == "extra_forbidden":
        return f"unknown field {name!r}"
    if kind in _KINDS:
        return f"field {name!r} must be {_KINDS[kind]}"
    if kind == "string_too_long":
        return f"field {name!r} is longer than {ctx['max_length']} characters"
    if kind == "string_too_short":
        return f"field {name!r} is shorter than {ctx['min_length']} characters"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx["pattern"])
        return f"field {name!r} must be {_PATTERNS.get(pattern, 'text matching ' + pattern)}"
    if kind == "literal_error":
        return f"field {name!r} must be {ctx['expected']}"
    if kind == "greater_than_equal":
        return f"field {name!r} must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"field {name!r} must be at most {ctx['le']}"
    where = f"field {name!r}: " if name else ""
    return f"{where}{error['msg']}"

"""Problems with a site file, each with its file, line, dotted key and what is wrong.

Pydantic reports every field it could not validate at once; `problems_from` turns its
errors into our `Problem`s — the key written as in the file (`services[2].quota.tickets`),
the line from `tomlpos`, and a message in the words of this project where pydantic's
own would be vaguer (the allowed keys of a table, what a pattern means).
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from quhao.tomlpos import Path, line_of


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str  # dotted, arrays counted from 0: services[2].quota.tickets; "" for the file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ValueError):
    """Every problem found in a site file, sorted by line, one a line in `str()`.

    `file`, `line`, `key` and `message` are those of the first problem."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda problem: problem.line or 0)
        if not self.problems:
            raise ValueError("a ConfigError needs at least one problem")
        first = self.problems[0]
        self.file, self.line, self.key, self.message = (
            first.file,
            first.line,
            first.key,
            first.message,
        )
        super().__init__("\n".join(str(problem) for problem in self.problems))

    @classmethod
    def one(cls, file: str, line: int | None, key: str, message: str) -> ConfigError:
        return cls([Problem(file, line, key, message)])


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def problems_from(
    error: ValidationError, root: type[BaseModel], file: str, lines: dict[Path, int]
) -> list[Problem]:
    details = error.errors()
    problems = []
    for detail in details:
        path = tuple(detail["loc"])
        if detail["type"] in ("too_short", "too_long") and any(
            other is not detail and tuple(other["loc"])[: len(path)] == path for other in details
        ):
            continue  # "not enough items" only because some items failed: those are reported
        owner, field = _declared_at(root, path)
        problems.append(
            Problem(file, line_of(lines, path), dotted(path), _message(detail, owner, field))
        )
    return problems


# What a value must be, by pydantic's error type.
_TYPES = {
    "int_type": "int",
    "int_parsing": "int",
    "int_from_float": "int",
    "float_type": "int or float",
    "float_parsing": "int or float",
    "string_type": "str",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "frozen_set_type": "an array",
    "path_type": "a path (str)",
}
# Errors of a constraint declared on a field: its description says what is expected.
_CONSTRAINTS = {
    "string_pattern_mismatch",
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_short",
    "too_long",
    "string_too_short",
    "string_too_long",
}


def _message(detail: ErrorDetails, owner: type[BaseModel] | None, field: FieldInfo | None) -> str:
    kind, ctx, value = detail["type"], detail.get("ctx") or {}, detail["input"]
    extra = field.json_schema_extra if field is not None else None
    echo = not (isinstance(extra, dict) and extra.get("echo") is False)  # secrets: never shown
    got = f", got {_kind(value)} {value!r}" if echo else ""
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(_file_keys(owner))) if owner else ""
        return f"unknown key (allowed: {allowed})" if allowed else "unknown key"
    if kind == "missing":
        return "required key missing"
    if kind in _TYPES:
        return f"must be {_TYPES[kind]}{got}"
    shown = f", got {value!r}" if echo and not isinstance(value, list | tuple | dict) else ""
    if kind in _CONSTRAINTS and field is not None and field.description:
        return f"{field.description}{shown}"
    if kind == "greater_than" and ctx.get("gt") == 0:
        return f"must be positive{shown}"
    if kind == "greater_than_equal" and ctx.get("ge") == 0:
        return f"must be zero or more{shown}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "literal_error":
        return f"unknown value {value!r} (use {ctx.get('expected', '')})"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return detail["msg"]


def _kind(value: Any) -> str:
    names = {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _file_keys(model: type[BaseModel]) -> list[str]:
    """The keys a table may hold: fields as the file spells them, not those the program sets."""
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def _declared_at(
    root: type[BaseModel], path: Path
) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model holding the last key of path, and the field (or item) declared there."""
    annotation: Any = root
    owner: type[BaseModel] | None = None
    field: FieldInfo | None = None
    for part in path:
        annotation, _ = _unwrap(annotation)
        field = None
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner = annotation
            field = next(
                (f for n, f in annotation.model_fields.items() if (f.alias or n) == part), None
            )
            if field is None:
                return owner, None
            annotation = field.annotation
        elif origin in (tuple, list, frozenset, set) and isinstance(part, int):
            annotation = get_args(annotation)[0]
        elif origin is dict:
            annotation = get_args(annotation)[1]
        else:
            return owner, None
    _, item = _unwrap(annotation)  # an array's item may declare its own constraint
    return owner, field or item


def _unwrap(annotation: Any) -> tuple[Any, FieldInfo | None]:
    """Strip Annotated[...] and `| None`; the FieldInfo an Annotated carried, if any."""
    info: FieldInfo | None = None
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *metadata = get_args(annotation)
            info = next((m for m in metadata if isinstance(m, FieldInfo)), info)
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation, info
            annotation = members[0]
        else:
            return annotation, info

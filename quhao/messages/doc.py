"""The field tables of docs/protocol.md, written from the models so they cannot drift.

The doc holds each table between two marker lines:

    <!-- generated: requests -->
    …
    <!-- end generated -->

`python -m quhao.messages.doc docs/protocol.md` rewrites them; tests/test_wire_contract.py
fails while the doc differs from what this writes.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from quhao.messages.events import EVENTS
from quhao.messages.replies import ACTION_REPLIES, TicketView
from quhao.messages.requests import ACTION_REQUESTS, ActionRequest
from quhao.messages.states import STATE_TOPICS, STATES

BEGIN = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
END = "<!-- end generated -->"


def _json_type(annotation: Any) -> str:
    """A field's type in JSON words: `string`, `integer`, `"a" | "b"`, `[string]`, …"""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _json_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return " \\| ".join(_json_type(arg) for arg in get_args(annotation))
    if origin is Literal:
        return " \\| ".join(f'`"{value}"`' for value in get_args(annotation))
    if origin is list:
        return f"[{_json_type(get_args(annotation)[0])}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(annotation, "null" if annotation is type(None) else str(annotation))


def _constraints(field: FieldInfo) -> Iterator[Any]:
    yield from field.metadata
    yield from _inner_constraints(field.annotation)


def _inner_constraints(annotation: Any) -> Iterator[Any]:
    stack = [annotation]
    while stack:
        annotation = stack.pop()
        if get_origin(annotation) is Annotated:
            for item in get_args(annotation)[1:]:
                yield from item.metadata if isinstance(item, FieldInfo) else (item,)
        stack.extend(get_args(annotation))


def _limits(field: FieldInfo) -> str:
    if get_origin(field.annotation) is list:  # the list's own length, then each item's
        own = _words(_found(field.metadata), "items")
        each = _words(_found(_inner_constraints(field.annotation)), "characters")
        return ", ".join([*own, *(f"each {words}" for words in each)])
    return ", ".join(_words(_found(_constraints(field)), "characters"))


def _found(constraints: Iterable[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in constraints:
        for name in ("min_length", "max_length", "ge", "le", "pattern"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _words(found: dict[str, Any], unit: str) -> list[str]:
    words = []
    if found.get("min_length"):
        words.append(f"{found['min_length']}–{found.get('max_length', '…')} {unit}")
    elif "max_length" in found:
        words.append(f"≤ {found['max_length']} {unit}")
    if "ge" in found or "le" in found:
        words.append(f"{found.get('ge', '…')}–{found.get('le', '…')}")
    if "pattern" in found:
        words.append(f"`{found['pattern']}`")
    return words


def _description(field: FieldInfo) -> str:
    if field.description:
        return field.description
    for item in _constraints(field):
        if isinstance(item, FieldInfo) and item.description:
            return item.description
    return ""


def _nested(annotation: Any) -> type[BaseModel] | None:
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field, nested objects' fields as `person.key`, in the model's order."""
    for name, field in model.model_fields.items():
        shown = f"{prefix}{field.alias or name}"
        yield shown, field
        inner = _nested(field.annotation)
        if inner is not None:
            yield from _rows(inner, f"{shown}.")


def request_table() -> str:
    rid = ActionRequest.model_fields["rid"]
    lines = [
        "| action | field | type | required | limits | meaning |",
        "|---|---|---|---|---|---|",
        # Optional in the model (the engine, and senders whose HallClient stamps it),
        # required on the wire: the hall refuses a request without one.
        f"| every action | `rid` | string | yes | {_limits(rid)} | {_description(rid)} |",
    ]
    for action, model in ACTION_REQUESTS.items():
        rows = [(name, field) for name, field in _rows(model) if name != "rid"]
        if not rows:
            lines.append(f"| `{action}` | — | | | | nothing but the `rid` |")
        for name, field in rows:
            required = "yes" if field.is_required() else "no"
            lines.append(
                f"| `{action}` | `{name}` | {_json_type(field.annotation)} | {required} "
                f"| {_limits(field)} | {_description(field)} |"
            )
    return "\n".join(lines)


def _shape(annotation: Any) -> str:
    """A reply field's value in brief: a nested object by its keys, a ticket by name."""
    inner = _nested(annotation)
    if inner is None:
        return _json_type(annotation)
    shape = "a ticket" if inner is TicketView else "{" + ", ".join(inner.model_fields) + "}"
    return shape + (" \\| null" if type(None) in get_args(annotation) else "")


def _field_list(model: type[BaseModel], skip: tuple[str, ...] = (), shapes: bool = False) -> str:
    return ", ".join(
        f"`{name}`"
        + ("" if field.is_required() else "?")
        + (f" ({_shape(field.annotation)})" if shapes else "")
        for name, field in _rows(model)
        if name not in skip and "." not in name
    )


def reply_table() -> str:
    lines = ["| action | reply fields (besides `ok`, `rid`) |", "|---|---|"]
    for action, model in ACTION_REPLIES.items():
        lines.append(f"| `{action}` | {_field_list(model, ('ok', 'rid'), shapes=True)} |")
    return "\n".join(lines)


def _summary(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def event_table() -> str:
    lines = ["| type | fields (besides `type`, `at`) | the fact |", "|---|---|---|"]
    for kind, model in EVENTS.items():  # with the office's (quhao/messages/office.py)
        lines.append(f"| `{kind}` | {_field_list(model, ('type', 'at'))} | {_summary(model)} |")
    return "\n".join(lines)


def state_table() -> str:
    lines = ["| topic | fields |", "|---|---|"]
    for name, model in STATES.items():
        lines.append(f"| `{STATE_TOPICS[name]}` | {_field_list(model)} |")
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {
    "requests": request_table,
    "replies": reply_table,
    "states": state_table,
    "events": event_table,
}


def render(text: str) -> str:
    """`text` with every generated table written afresh from the models."""
    out, at = [], 0
    for match in BEGIN.finditer(text):
        if match.start() < at:
            continue
        end = text.index(END, match.end())
        out += [text[at : match.end()], "\n", TABLES[match.group(1)](), "\n"]
        at = end
    out.append(text[at:])
    return "".join(out)


def main(argv: list[str]) -> int:
    for name in argv or ["docs/protocol.md"]:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        fresh = render(text)
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            print(f"{path}: tables rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""JSON payloads on the wire: compact UTF-8 encoding and careful decoding.

Decoding is the trust boundary for every payload a device sends: whatever the bytes,
`decode_object` returns a dict of plain JSON values that can be stored and echoed
safely, or raises `BadPayload` saying what is wrong — never anything else.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_PAYLOAD_BYTES = 8192  # a request is a few hundred bytes; anything bigger is not ours
MAX_DEPTH = 8
MAX_STRING = 512  # characters; fields have tighter limits of their own
MAX_INT = 2**53  # what JSON numbers carry exactly everywhere (and SQLite stores)


class BadPayload(ValueError):
    pass


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _no_constants(name: str) -> Any:
    raise BadPayload(f"payload has {name}, which is not a JSON number")


def decode_object(raw: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """A JSON object of sane values, or `BadPayload` saying what is wrong."""
    if len(raw) > max_bytes:
        raise BadPayload(f"payload is {len(raw)} bytes; at most {max_bytes}")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise BadPayload(f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise BadPayload(f"payload is not JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:
        raise BadPayload("payload nests too deeply") from exc
    except BadPayload:
        raise
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise BadPayload(f"payload has a value out of range ({str(exc)[:80]})") from exc
    if not isinstance(value, dict):
        raise BadPayload(f"payload must be a JSON object, got {type(value).__name__}")
    _check_values(value, "", 0)
    return value


def _check_values(value: Any, where: str, depth: int) -> None:
    """Every string encodable (no lone surrogates), every number finite and in range."""
    if depth > MAX_DEPTH:
        raise BadPayload(f"payload nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise BadPayload(f"{where or 'a value'}: text longer than {MAX_STRING} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadPayload(f"{where or 'a value'}: text is not valid Unicode") from exc
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise BadPayload(f"{where or 'a value'}: number out of range")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_INT:
            raise BadPayload(f"{where or 'a value'}: number out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, "a key", depth + 1)
            _check_values(item, f"field {shown(key)}", depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, where, depth + 1)


def shown(value: Any, limit: int = 40) -> str:
    """A value as an error message may echo it: repr, cut to a bounded length."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ok(rid: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "rid": rid, **body}


def error(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "rid": rid, "error": {"code": code, "message": message}}

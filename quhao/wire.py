"""JSON payloads on the wire: compact UTF-8 encoding and careful decoding."""

from __future__ import annotations

import json
from typing import Any


class BadPayload(ValueError):
    pass


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_object(raw: bytes) -> dict[str, Any]:
    """A JSON object or `BadPayload` saying what is wrong (never anything else)."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadPayload(f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise BadPayload(f"payload is not JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:
        raise BadPayload("payload nests too deeply") from exc
    if not isinstance(value, dict):
        raise BadPayload(f"payload must be a JSON object, got {type(value).__name__}")
    return value


def ok(rid: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "rid": rid, **body}


def error(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "rid": rid, "error": {"code": code, "message": message}}

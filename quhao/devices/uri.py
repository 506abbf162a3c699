"""Device URIs from the site configuration: `scheme://[host][/path][?key=value&…]`.

Examples: `serial:///dev/ttyUSB0?baud=115200`, `tcp://10.0.0.21:9100`, `pcsc://`,
`pcsc://?reader=Virtual%20PCD`, `evdev:///dev/input/by-id/usb-keypad`,
`evdev://?name=caller%20keypad`, `events:///run/quhao/keys-W5.fifo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass(frozen=True)
class DeviceUri:
    scheme: str
    host: str = ""
    port: int | None = None
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def int_param(self, name: str, default: int) -> int:
        value = self.params.get(name)
        if value is None:
            return default
        try:
            return int(value, 0)
        except ValueError as exc:
            raise ValueError(
                f"{self.text}: parameter {name} must be a number, got {value!r}"
            ) from exc

    def __str__(self) -> str:
        return self.text


def parse(text: str, allowed: tuple[str, ...] | None = None) -> DeviceUri:
    parts = urlsplit(text)
    if not parts.scheme:
        raise ValueError(f"device URI {text!r} has no scheme (like serial://, tcp://)")
    if allowed and parts.scheme not in allowed:
        raise ValueError(f"device URI {text!r}: scheme must be one of {', '.join(allowed)}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"device URI {text!r}: bad port") from exc
    return DeviceUri(
        parts.scheme,
        parts.hostname or "",
        port,
        unquote(parts.path),
        dict(parse_qsl(parts.query)),
        text,
    )
